"""Running the network where it is deployed: a fixed camera's stream, and an HTTP service.

`stream` (video file, camera or folder of frames -> annotated video), `server` (an ASGI app with
a dynamic batcher). Both take any runner (`toolkit.runtime.open_runner`), so they work with
`.pt`, `.onnx` and `.engine` models; none of these modules imports torch, and the optional
libraries (PyAV for video, Starlette + uvicorn for the server) are imported lazily with a
one-line `MissingDependency` naming the extra (`video`, `serve`) when absent.
"""
