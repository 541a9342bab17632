"""Commands that deploy a model: `stream` (camera/video/folder) and `serve` (HTTP). No torch at import."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import console, err_console
from .run_cmd import NO_BG_CACHE_HELP, PROVIDER_HELP

KEY_FILE_HELP = ("The key requests must carry (Authorization: Bearer KEY): read from this file, or made in it when it does not exist "
                 "(owner-only). Default: $TOOLKIT_SERVE_KEY, else ~/.config/toolkit/serve.key.")
AUTH_HELP = ("--auth: require the key on loopback too; --no-auth: no key at all (a warning beyond loopback). "
             "Default: a key beyond loopback (127.0.0.1, ::1), none on it.")


def stream(
    model: Path = typer.Option(..., "--model", "-m", help="Model file: .pt, .onnx or .engine (backend by suffix)."),
    source: str = typer.Option(
        ..., "--source", "-s", help="A video file, a folder of frames, a camera index (0) / device (/dev/video0), or a URL (rtsp://, http://, udp://, ...)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output video (.mp4, .mkv, .mov, .avi) or a folder for PNG frames (or --no-video)."),
    layout: str = typer.Option(
        "panel", "--layout", help="What the video shows: panel (frame | mask overlay | depth, for review) or overlay (the person tinted, live use)."),
    out_size: str | None = typer.Option(None, "--out-size", help="The camera picture's size in the video, WIDTHxHEIGHT (e.g. 640x360; default: the camera's)."),
    no_video: bool = typer.Option(False, "--no-video", help="Write no video: masks, --events, --json, the preview and /metrics only."),
    events: str | None = typer.Option(
        None, "--events", help="A JSON line per frame (coverage, box, median depth, flicker) to this file or - (standard output), as frames finish."),
    preset: str | None = typer.Option(
        None, "--preset", help=("H.264 encoder preset (default: ultrafast with zero latency for cameras and URLs, veryfast for "
                                "files, superfast for pictures of 2 MP and more, e.g. a 720p camera's panel).")),
    match_infer: bool = typer.Option(
        False, "--match-infer", help="Resize each frame for the model exactly as `toolkit infer` does (masks equal to infer's; slower at HD)."),
    bg: Path | None = typer.Option(None, "--bg", help="Image of the empty scene (resized to the frames' size if it differs)."),
    bg_frames: int | None = typer.Option(None, "--bg-frames", help="Learn the background as the per-pixel median of the first N frames (default 30)."),
    masks_dir: Path | None = typer.Option(None, "--masks-dir", help="Also write each frame's raw mask as a grey PNG here."),
    batch: int | None = typer.Option(
        None, "--batch", help="Largest batch of frames per inference, taken when frames are waiting (default 4; 1 for cameras and URLs)."),
    max_frames: int | None = typer.Option(None, "--max-frames", help="Stop after this many frames (a camera never ends by itself)."),
    fps: float | None = typer.Option(None, "--fps", help="Output frame rate (default: the source's; 25 for a folder)."),
    provider: str = typer.Option("cpu", "--provider", help=PROVIDER_HELP),
    no_bg_cache: bool = typer.Option(False, "--no-bg-cache", help=NO_BG_CACHE_HELP),
    bg_update: float = typer.Option(
        0.0, "--bg-update", help="Running update of the background from pixels the model calls background: the share of each frame taken in (0: fixed)."),
    bg_relearn: bool = typer.Option(
        False, "--bg-relearn", help="Relearn the background (median of the next frames) when it stays unlike the frames (light switched, camera moved)."),
    latest: bool | None = typer.Option(
        None, "--latest/--all-frames", help="Live: always the newest frame, older ones dropped (default for cameras and URLs); or every frame (files)."),
    stride: int = typer.Option(1, "--stride", help="Process every N-th frame the source delivers."),
    stall_s: float = typer.Option(10.0, "--stall-s", help="A network stream with no frame for this long is reopened."),
    reconnect: int = typer.Option(-1, "--reconnect", help="Reopen a dropped or stalled network stream up to N times (-1: forever)."),
    rtsp_transport: str = typer.Option("tcp", "--rtsp-transport", help="RTSP over tcp (default) or udp."),
    smooth: float = typer.Option(0.0, "--smooth", help="Exponential moving average of mask and depth: the previous frame's weight in [0, 1) (0: off)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON (frames, fps, flicker, notes)."),
    preview: int | None = typer.Option(
        None, "--preview", help="Serve the live panel on http://127.0.0.1:PORT/ (MJPEG at /stream.mjpg, /metrics); 0: any free port."),
    preview_host: str | None = typer.Option(
        None, "--preview-host", help="Address the preview listens on (default 127.0.0.1); beyond loopback its pages need the key."),
    key_file: Path | None = typer.Option(None, "--key-file", help="The preview's key: " + KEY_FILE_HELP),
    auth: bool | None = typer.Option(None, "--auth/--no-auth", help="The preview's key: " + AUTH_HELP),
) -> None:
    """Run a model on every frame: a video (or PNGs) of frame | mask overlay | depth, or the overlay alone; masks; events.

    Ctrl-C stops after the frames in flight and still closes the video properly.
    """
    from ..deploy.adapt import Adaptation
    from ..deploy.live import LiveOptions
    from ..deploy.options import StreamOptions, parse_out_size
    from ..deploy.stream import stream as run_stream

    live = LiveOptions(latest=latest, stride=stride, stall_s=stall_s, reconnect=None if reconnect < 0 else reconnect, transport=rtsp_transport)
    options = StreamOptions(bg=bg, bg_frames=bg_frames, masks_dir=masks_dir, batch=batch, provider=provider, fps=fps,
                            max_frames=max_frames, bg_cache=not no_bg_cache, smooth=smooth, live=live,
                            adapt=Adaptation(rate=bg_update, relearn=bg_relearn) if bg_update or bg_relearn else None,
                            layout=layout, out_size=parse_out_size(out_size) if out_size is not None else None, video=not no_video,
                            events=events, preset=preset, match_infer=match_infer)
    if json_out is not None:
        from ..core.fsutil import check_output_file

        check_output_file(json_out)
    from ..deploy.preview import check_preview_options

    check_preview_options(preview, preview_host, key_file, auth)
    progress, on_start, on_frame = stream_progress()
    viewer = open_preview(preview, preview_host, key_file, auth)
    try:
        report = run_stream(model, source, out, options, preview=viewer, on_start=on_start, on_frame=on_frame)
    finally:
        progress.stop()
        if viewer is not None:
            viewer.close()
    print_stream_report(report, out, masks_dir, json_out, err_console if events == "-" else console, events)


def stream_progress():
    """(the progress bar, on_start, on_frame) of a stream: its start lines and frame rate on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("stream"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fps]:.1f} fps"), TimeElapsedColumn(),
        console=err_console, transient=False,
    )
    task = progress.add_task("stream", total=None, fps=0.0)

    def on_start(report, expected: int | None) -> None:
        if report.self_test:
            err_console.print(report.self_test, soft_wrap=True)
        err_console.print(f"source: {report.source}")
        err_console.print(report.background)
        if report.encoder and report.encoder != "png":
            change = " (--preset to change)" if report.codec == "libx264" else ""
            err_console.print(f"encoder: {report.encoder}{change}", soft_wrap=True)
        progress.update(task, total=expected)
        progress.start()

    def on_frame(done: int, rate: float) -> None:
        progress.update(task, completed=done, fps=rate)

    return progress, on_start, on_frame


def open_preview(port: int | None, host: str | None, key_file: Path | None, auth: bool | None):
    """The live preview the flags ask for (None without --preview), its key resolved and said."""
    if port is None:
        return None
    from ..deploy.auth import resolve_access
    from ..deploy.preview import Preview

    host = host or "127.0.0.1"
    access = resolve_access(host, key_file=key_file, auth=auth, port=port, tls_hint="put a TLS proxy in front of the preview")
    for line in access.lines:
        err_console.print(line, soft_wrap=True)
    viewer = Preview(port, host, access)
    err_console.print(f"preview: {viewer.url} (panel, /stream.mjpg, /metrics)", soft_wrap=True)
    return viewer


def print_stream_report(report, out: Path | None, masks_dir: Path | None, json_out: Path | None, console=console,
                        events: str | None = None) -> None:
    """The stream's notes, its one-line summary, the flicker figure, and the JSON when asked
    (on `console`: standard error when the events go to standard output)."""
    for note in report.notes:
        err_console.print(f"note: {note}")
    stopped = " (interrupted: the frames so far)" if report.interrupted else ""
    if out is None:
        where = "no video"
    else:
        where = f"{out} ({report.codec} video, {report.layout})" if report.codec != "png" else f"{out} (PNG frames, {report.layout})"
    console.print(f"{report.frames} frame(s) in {report.seconds:.1f} s ({report.fps:.1f} fps) -> {where}{stopped}")
    if report.events:
        console.print(f"{report.events} event line(s) -> {'standard output' if events == '-' else events}")
    if masks_dir is not None:
        console.print(f"{report.masks} mask(s) -> {masks_dir}")
    if report.dropped or report.reconnects or report.received != report.frames:
        console.print(f"received {report.received}, dropped {report.dropped} (live: newest frame first), reconnects {report.reconnects}")
    if report.latency_ms_p50 is not None:
        console.print(f"latency from source to output: p50 {report.latency_ms_p50:.0f} ms, p99 {report.latency_ms_p99:.0f} ms")
    for event in report.background_events:
        err_console.print(f"note: {event}", soft_wrap=True)
    if report.flicker is not None:
        smoothed = f", --smooth {report.smooth:g}" if report.smooth else ""
        console.print(f"flicker {report.flicker:.4f} (mean mask change between frames on still pixels{smoothed})")
    if json_out is not None:
        from ..core.fsutil import write_text_atomic

        write_text_atomic(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_out}")


def serve(
    model: Path = typer.Option(..., "--model", "-m", help="Model file: .pt, .onnx or .engine (backend by suffix)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="Port (0: any free port, printed at start)."),
    max_batch: int = typer.Option(8, "--max-batch", help="Largest batch the dynamic batcher forms from concurrent requests."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="How long the batcher waits for more requests after the first."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest request body; larger ones get 413."),
    provider: str = typer.Option("cpu", "--provider", help=PROVIDER_HELP),
    bg: Path | None = typer.Option(None, "--bg", help="A server for one fixed camera: its background image; requests then send only fgbg."),
    no_bg_cache: bool = typer.Option(False, "--no-bg-cache", help=NO_BG_CACHE_HELP),
    log_level: str = typer.Option(
        "info", "--log-level",
        help="debug or info: one line per request on stderr (method, path, status, ms, batch size); warning or error: failures only."),
    key_file: Path | None = typer.Option(
        None, "--key-file", help=KEY_FILE_HELP),
    auth: bool | None = typer.Option(None, "--auth/--no-auth", help=AUTH_HELP),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="TLS certificate (PEM): serve HTTPS. With --tls-key."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="The TLS certificate's private key (PEM)."),
) -> None:
    """Serve the model over HTTP: POST /v1/infer, GET /v1/model, /healthz, /readyz, /metrics (Prometheus), and an upload page at /.

    The model's self-test runs first: a model that fails it is one line and exit 1, before the port opens."""
    from ..deploy.options import ServeOptions
    from ..deploy.server import serve_model

    options = ServeOptions(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms, max_upload_mb=max_upload_mb,
                           provider=provider, bg=bg, bg_cache=not no_bg_cache, log_level=log_level, key_file=key_file, auth=auth,
                           tls_cert=tls_cert, tls_key=tls_key)
    serve_model(model, options, say=lambda line: console.print(line, soft_wrap=True) or console.file.flush(),
                tell=lambda line: err_console.print(line, soft_wrap=True))


def register(app: typer.Typer) -> None:
    app.command("stream")(stream)
    app.command("serve")(serve)
