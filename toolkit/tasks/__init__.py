"""What the commands do, as library functions the CLI is a thin shell over: infer, bench, val,
doctor, demo (deploy's stream and serve live in `toolkit.deploy`)."""
