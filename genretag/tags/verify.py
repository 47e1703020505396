"""What a reader sees of a file: every tag field but the genre as mutagen decodes it, and every audio packet
as PyAV (FFmpeg) demuxes it.

The safe write compares these for the file before and after the genre write, beside the byte-level
comparison of `genretag.tags.fields`: bytes kept are not enough when their meaning depends on something
around them (an ID3v2.4 frame still unsynchronised in a tag whose header no longer says so; a fragment
whose data offset was not moved with its data). A file either view cannot read is not verified, and the
write is refused.
"""

from __future__ import annotations

import hashlib
import logging

from genretag.errors import one_line
from genretag.tags.errors import TagError

__all__ = ["VerifyError", "audio_packets", "reader_fields"]

log = logging.getLogger(__name__)

#: Keys of the genre field as mutagen names them (ID3 HashKey, Vorbis comment name, MP4 atom).
_GENRE_KEYS = {"TCON", "TCO", "genre", "\xa9gen", "gnre"}


class VerifyError(TagError):
    """The file cannot be read the way a player reads it: a write to it cannot be verified."""


def _digest(value) -> str:
    """A stable digest of a decoded value (bytes subclasses such as MP4Cover keep their attributes)."""
    h = hashlib.sha256()

    def feed(v) -> None:
        if isinstance(v, (list, tuple)):
            h.update(b"[")
            for x in v:
                feed(x)
                h.update(b",")
            h.update(b"]")
        elif isinstance(v, (bytes, bytearray)):
            h.update(type(v).__name__.encode() + repr(sorted(vars(v).items()) if hasattr(v, "__dict__") else "")
                     .encode() + len(v).to_bytes(8, "big"))
            h.update(bytes(v))
        else:
            h.update(repr(v).encode("utf-8", "surrogatepass"))

    feed(value)
    return h.hexdigest()


def _id3_fields(tags) -> list[tuple[str, str]]:
    out = [(key, _digest(repr(frame))) for key, frame in tags.items() if frame.FrameID not in _GENRE_KEYS]
    out += [(f"unknown:{i}", _digest(raw)) for i, raw in enumerate(getattr(tags, "unknown_frames", []) or [])]
    return out


def reader_fields(path: str, fmt: str) -> list[tuple[str, str]]:
    """(field, digest of its decoded value) for every tag field but the genre, sorted, as mutagen reads it.

    Raises VerifyError when mutagen cannot read the file's tags.
    """
    try:
        out = _reader_fields(path, fmt)
    except TagError:
        raise
    except Exception as e:  # mutagen's own errors, struct errors, anything a reader stops at
        log.debug("mutagen cannot read %r", path, exc_info=True)
        raise VerifyError(f"cannot verify the write: the tag library cannot read the tags ({one_line(e)})") from None
    return sorted(out)


def _reader_fields(path: str, fmt: str) -> list[tuple[str, str]]:
    if fmt == "mp3":
        from mutagen.id3 import ID3, ID3NoHeaderError

        try:
            return _id3_fields(ID3(path))
        except ID3NoHeaderError:
            return []
    if fmt in ("wav", "aiff"):
        from mutagen.aiff import AIFF
        from mutagen.wave import WAVE

        tags = (WAVE if fmt == "wav" else AIFF)(path).tags
        return _id3_fields(tags) if tags is not None else []
    if fmt == "mp4":
        from mutagen.mp4 import MP4

        tags = MP4(path).tags
        if tags is None:
            return []
        out = [(key, _digest(value)) for key, value in tags.items() if key not in _GENRE_KEYS]
        out += [(f"failed:{key}", _digest(value)) for key, value in (tags._failed_atoms or {}).items()
                if key not in _GENRE_KEYS]
        return out
    if fmt == "flac":
        from mutagen.flac import FLAC, Padding, VCFLACDict

        out = []
        for i, block in enumerate(FLAC(path).metadata_blocks):
            if isinstance(block, Padding):
                continue
            if isinstance(block, VCFLACDict):
                out += _comment_fields(block)
            else:
                out.append((f"block:{block.code}:{i}", _digest(block.write())))
        return out
    if fmt in ("ogg-vorbis", "ogg-opus"):
        from mutagen.oggopus import OggOpus
        from mutagen.oggvorbis import OggVorbis

        tags = (OggVorbis if fmt == "ogg-vorbis" else OggOpus)(path).tags
        return _comment_fields(tags) if tags is not None else []
    raise VerifyError(f"cannot verify the write: no tag reader for {fmt}")


def _comment_fields(comments) -> list[tuple[str, str]]:
    kept = [(k, v) for k, v in comments if k.lower() != "genre"]
    out = [("vendor", _digest(comments.vendor))]
    return out + [(f"comment:{i}:{k}", _digest(v)) for i, (k, v) in enumerate(kept)]


def audio_packets(path: str, fmt: str) -> str:
    """A digest of every audio packet PyAV demuxes (bytes, timestamps, duration, keyframe flag) and of each
    audio stream's decoder parameters: what a player feeds its decoder.

    Vorbis's parameters (extradata) hold the comment header, the field being written, so for Vorbis
    they are left out: the identification and setup headers are compared byte for byte by the tag reader.
    Raises VerifyError when the file cannot be demuxed to its end.
    """
    import av

    h = hashlib.blake2b(digest_size=20)
    packets = 0
    try:
        with av.open(path, metadata_errors="replace") as c:
            streams = list(c.streams.audio)
            if not streams:
                raise VerifyError("cannot verify the write: no audio stream")
            for s in streams:
                cc = s.codec_context
                h.update(f"{s.index}:{cc.name}:{cc.sample_rate}:{cc.channels}:".encode())
                if cc.name != "vorbis" and cc.extradata:
                    h.update(bytes(cc.extradata))
            for pkt in c.demux(streams):
                if pkt.size == 0:  # the flush packet at the end of each stream
                    continue
                packets += 1
                h.update(f"|{pkt.stream.index}:{pkt.pts}:{pkt.dts}:{pkt.duration}:{int(pkt.is_keyframe)}:"
                         f"{pkt.size}:".encode())
                h.update(bytes(pkt))
    except VerifyError:
        raise
    except Exception as e:  # av.error.FFmpegError and its kin: the demuxer stopped
        raise VerifyError(f"cannot verify the write: the audio cannot be demuxed ({one_line(e)})") from None
    return f"{packets}:{h.hexdigest()}"
