"""Binary frames: a product's declarative codec (``spec``), the stream and datagram framers
(``framing``), the field types (``fields``) and the codec that turns frames into ThingLinks
uplink messages and commands into frames (``codec``). Pure code without I/O: the TCP and UDP
transports feed it bytes. ``examples/`` holds two codecs shipped with their products.
"""

from edge.frames.codec import Codec, Decoded, Uplink
from edge.frames.errors import FrameError, SpecError

__all__ = ["Codec", "Decoded", "FrameError", "SpecError", "Uplink"]
