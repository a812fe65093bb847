"""The plugin's pure core: decisions over plain values. No grpc, pynvml, kubernetes or I/O here."""
