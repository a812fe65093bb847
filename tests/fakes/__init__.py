"""Stand-ins for the real components kube-vgpu talks to (docs/testing.md, "Where test helpers live"). Each
module (or the README of ``nvml/`` and ``driver/``) names the real behaviours it reproduces, the hostile ones
included, and what it leaves out."""
