"""The HTTP device API (docs/devices.md, "HTTP"), without I/O: :mod:`.connection` turns the
bytes of one connection into bounded requests and answers back into bytes (h11 parses
HTTP/1.1), :mod:`.api` answers each request through the ThingLinks layer, :mod:`.config`
holds the budgets. edge.transports.http_device puts them on a socket."""
