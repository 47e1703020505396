"""Real audio files made at test time, in every format genretag reads or tags.

Nothing here needs the network or fixture files: tones are synthesised, then
written with soundfile (wav, aiff, flac, ogg vorbis, opus, mp3) or PyAV (AAC in
an mp4 container for .m4a), and tagged with mutagen, embedded art included.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from genretag.audio.decode import write_m4a

#: Every extension `write_audio` knows, with a sample rate that suits its codec.
FORMATS: dict[str, int] = {
    ".mp3": 44100, ".flac": 22050, ".ogg": 22050, ".opus": 48000,
    ".m4a": 44100, ".wav": 22050, ".aiff": 22050,
}


def make_tone(sr: int = 22050, seconds: float = 1.0, freq: float = 440.0, channels: int = 1,
              seed: int | None = 0) -> np.ndarray:
    """A sine (plus a little noise, so codecs have something to chew on).

    Shape (n,) for mono, (n, channels) otherwise; float32 in [-0.5, 0.5].
    """
    n = int(round(sr * seconds))
    t = np.arange(n, dtype=np.float64) / sr
    x = 0.4 * np.sin(2 * np.pi * freq * t)
    if seed is not None:
        x = x + 0.02 * np.random.default_rng(seed).standard_normal(n)
    x = x.astype(np.float32)
    if channels == 1:
        return x
    return np.stack([x * (1.0 - 0.1 * c) for c in range(channels)], axis=1)


def write_audio(path: str | os.PathLike, x: np.ndarray, sr: int) -> Path:
    """Write `x` to `path`, choosing the container and codec from the extension."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".m4a" or ext == ".mp4":
        write_m4a(path, x, sr)
    elif ext == ".mp3":
        sf.write(str(path), x, sr, format="MP3", subtype="MPEG_LAYER_III")
    elif ext == ".flac":
        sf.write(str(path), x, sr, format="FLAC", subtype="PCM_16")
    elif ext in (".ogg", ".oga"):
        sf.write(str(path), x, sr, format="OGG", subtype="VORBIS")
    elif ext == ".opus":
        if sr != 48000:
            raise ValueError("opus files must be written at 48 kHz")
        sf.write(str(path), x, sr, format="OGG", subtype="OPUS")
    elif ext in (".wav", ".wave"):
        sf.write(str(path), x, sr, format="WAV", subtype="PCM_16")
    elif ext in (".aif", ".aiff", ".aifc"):
        sf.write(str(path), x, sr, format="AIFF", subtype="PCM_16")
    else:
        raise ValueError(f"write_audio: unknown extension {ext!r}")
    return path


def make_file(path: str | os.PathLike, seconds: float = 1.0, freq: float = 440.0,
              channels: int = 1, sr: int | None = None, **tags) -> Path:
    """A tone file at `path` with tags (see `add_tags`; no tags when none are given)."""
    path = Path(path)
    sr = sr or FORMATS.get(path.suffix.lower(), 22050)
    write_audio(path, make_tone(sr, seconds, freq, channels), sr)
    if tags:
        add_tags(path, **tags)
    return path


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 4) -> bytes:
    """A valid tiny PNG, used as embedded cover art."""
    raw = b"".join(b"\x00" + bytes(color) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def add_tags(path: str | os.PathLike, title: str | None = "A Song", artist: str | None = "Someone",
             album: str | None = "An Album", genre: str | list[str] | None = None, art: bool = True,
             id3_version: int = 4) -> Path:
    """Give `path` typical tags in its format's native tag system, plus cover art.

    mp3/wav/aiff get ID3v2 (`id3_version` 3 or 4) with an APIC frame; flac a
    Vorbis comment and a PICTURE block; ogg/opus a Vorbis comment with a
    METADATA_BLOCK_PICTURE; m4a MP4 atoms with covr.
    """
    from mutagen import id3
    from mutagen.flac import FLAC, Picture

    path = Path(path)
    ext = path.suffix.lower()
    genres = [genre] if isinstance(genre, str) else list(genre or [])
    if ext in (".mp3", ".wav", ".wave", ".aif", ".aiff", ".aifc"):
        if ext == ".mp3":
            try:
                tags = id3.ID3(str(path))
            except id3.ID3NoHeaderError:
                tags = id3.ID3()
            holder = None
        else:
            from mutagen.aiff import AIFF
            from mutagen.wave import WAVE

            holder = WAVE(str(path)) if ext in (".wav", ".wave") else AIFF(str(path))
            if holder.tags is None:
                holder.add_tags()
            tags = holder.tags
        enc = 3 if id3_version == 4 else 1
        if title is not None:
            tags.add(id3.TIT2(encoding=enc, text=[title]))
        if artist is not None:
            tags.add(id3.TPE1(encoding=enc, text=[artist]))
        if album is not None:
            tags.add(id3.TALB(encoding=enc, text=[album]))
        tags.add(id3.TRCK(encoding=enc, text=["3/10"]))
        tags.add(id3.COMM(encoding=enc, lang="eng", desc="", text=["made by the test factory"]))
        tags.add(id3.TXXX(encoding=enc, desc="custom", text=["keep me"]))
        if genres:
            tags.add(id3.TCON(encoding=enc, text=genres))
        if art:
            tags.add(id3.APIC(encoding=enc, mime="image/png", type=3, desc="cover", data=png_bytes()))
        if id3_version == 3:
            tags.update_to_v23()
        if holder is None:
            tags.save(str(path), v2_version=id3_version, v23_sep="/")
        else:
            holder.save(v2_version=id3_version)
        return path
    if ext in (".flac", ".ogg", ".oga", ".opus"):
        import mutagen

        f = FLAC(str(path)) if ext == ".flac" else mutagen.File(str(path))
        if f.tags is None:
            f.add_tags()
        for key, val in (("TITLE", title), ("ARTIST", artist), ("ALBUM", album)):
            if val is not None:
                f.tags[key] = [val]
        f.tags["TRACKNUMBER"] = ["3"]
        f.tags["COMMENT"] = ["made by the test factory"]
        if genres:
            f.tags["GENRE"] = genres
        if art:
            pic = Picture()
            pic.type, pic.mime, pic.desc, pic.data = 3, "image/png", "cover", png_bytes()
            pic.width = pic.height = 4
            pic.depth = 24
            if ext == ".flac":
                f.add_picture(pic)
            else:
                import base64

                f.tags["METADATA_BLOCK_PICTURE"] = [base64.b64encode(pic.write()).decode("ascii")]
        f.save()
        return path
    if ext in (".m4a", ".mp4"):
        from mutagen.mp4 import MP4, MP4Cover

        f = MP4(str(path))
        if f.tags is None:
            f.add_tags()
        for key, val in (("\xa9nam", title), ("\xa9ART", artist), ("\xa9alb", album)):
            if val is not None:
                f.tags[key] = [val]
        f.tags["trkn"] = [(3, 10)]
        f.tags["\xa9cmt"] = ["made by the test factory"]
        if genres:
            f.tags["\xa9gen"] = genres
        if art:
            f.tags["covr"] = [MP4Cover(png_bytes(), imageformat=MP4Cover.FORMAT_PNG)]
        f.save()
        return path
    raise ValueError(f"add_tags: unknown extension {ext!r}")


_GENRE_KEYS = {"TCON", "GENRE", "\xa9gen", "gnre"}


def all_tags(path: str | os.PathLike, without_genre: bool = True) -> dict:
    """Every tag of a file as comparable plain data (art included as bytes).

    The genre field is left out unless `without_genre` is False, so tests can
    check that a genre write changed nothing else.
    """
    import mutagen

    f = mutagen.File(str(path))
    out: dict = {}
    if f is None or f.tags is None:
        return out
    for key in f.tags.keys():
        base = key.split(":")[0]
        if without_genre and (base in _GENRE_KEYS or key.upper() == "GENRE"):
            continue
        val = f.tags[key]
        if hasattr(val, "_pprint"):  # an ID3 frame
            out[key] = (type(val).__name__, getattr(val, "data", None) or val._pprint())
        else:
            out[key] = [bytes(v) if isinstance(v, bytes) else v for v in val] if isinstance(val, list) else val
    pictures = getattr(f, "pictures", None)
    if pictures:
        out["__pictures__"] = [p.data for p in pictures]
    return out


def genre_values(path: str | os.PathLike) -> list[str]:
    """The genre values exactly as stored (independent of genretag's own reader)."""
    import mutagen

    f = mutagen.File(str(path))
    if f is None or f.tags is None:
        return []
    if "TCON" in f.tags:
        return list(f.tags["TCON"].text)
    for key in ("\xa9gen", "GENRE", "genre"):
        try:
            return [str(v) for v in f.tags[key]]
        except (KeyError, ValueError):  # Vorbis comments refuse non-ASCII keys
            continue
    return []


def decode(path: str | os.PathLike) -> np.ndarray:
    """All samples of a file (float32, (n, channels)), via soundfile or PyAV."""
    path = Path(path)
    if path.suffix.lower() not in (".m4a", ".mp4"):
        x, _ = sf.read(str(path), dtype="float32", always_2d=True)
        return x
    import av

    parts = []
    with av.open(str(path)) as c:
        for frame in c.decode(c.streams.audio[0]):
            a = frame.to_ndarray()
            parts.append(a.T if frame.format.is_planar else a.reshape(-1, len(frame.layout.channels)))
    return np.concatenate(parts, axis=0).astype(np.float32)


def track_result(path: str, **probs: float):
    """A classification result of a GTZAN model with the given probabilities (the other genres share
    what is left), for tests that replace the network's answers."""
    from genretag.card import GTZAN_GENRES
    from genretag.pipeline.inference import TrackResult

    rest = [g for g in GTZAN_GENRES if g not in probs]
    left = max(0.0, 1.0 - sum(probs.values()))
    full = {**{g: left / len(rest) for g in rest}, **probs}
    top = max(full, key=full.get)
    return TrackResult(path, top, full[top], full, 3, None)
