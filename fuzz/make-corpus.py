#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/corpus/<target>/, from shared/vectors.json.

Each seed is a real message of the protocol (the same vectors the web client's codec is
checked against), so the fuzzers start from inputs that decode and mutate from there.
Re-run after the vectors change: `python3 fuzz/make-corpus.py` (it replaces the seeds).
"""

import json
import pathlib
import shutil
import struct

HERE = pathlib.Path(__file__).resolve().parent
VECTORS = json.loads((HERE.parent / "shared" / "vectors.json").read_text())["vectors"]
# A few of the fifteen error messages are enough: they differ only in the code.
ERRORS_KEPT = {"error_malformed", "error_unsupported_version", "error_cooling_off"}


def write(target, name, data):
    (HERE / "corpus" / target).mkdir(parents=True, exist_ok=True)
    (HERE / "corpus" / target / name).write_bytes(data)


def by_kind(kind):
    for v in VECTORS:
        if v["kind"] == kind and (not v["name"].startswith("error_") or v["name"] in ERRORS_KEPT):
            yield v


def chunked(stream, size):
    """frame_reader input: records [n][n bytes] (n = 255: the rest)."""
    out = bytearray()
    for i in range(0, len(stream), size):
        part = stream[i : i + size]
        out += bytes([len(part)]) + part
    return bytes(out)


def fragment(match, flags, frame, index, count, length):
    """reassembler input: one 9-byte record."""
    return struct.pack("<BBHHHB", match, flags, frame, index, count, length)


def main():
    shutil.rmtree(HERE / "corpus", ignore_errors=True)
    for target, kind in [("client_msg", "ClientMsg"), ("server_msg", "ServerMsg"), ("chat_frame", "ChatFrame")]:
        for v in by_kind(kind):
            write(target, v["name"], bytes.fromhex(v["hex"]))
    for v in by_kind("MediaHeader"):
        write("media_header", v["name"], bytes.fromhex(v["hex"]) + b"payload")
    write("media_header", "empty_payload", bytes.fromhex(next(by_kind("MediaHeader"))["hex"]))

    control = b"".join(bytes.fromhex(v["frame_hex"]) for v in by_kind("ClientMsg"))
    chat = b"".join(bytes.fromhex(v["frame_hex"]) for v in by_kind("ChatFrame"))
    write("frame_reader", "control_whole", bytes([255]) + control)
    write("frame_reader", "control_by_3", chunked(control, 3))
    write("frame_reader", "control_by_1", chunked(control[:64], 1))
    write("frame_reader", "chat_by_200", chunked(chat, 200))
    write("frame_reader", "oversized_prefix", bytes([2, 0xFF, 0xFF]))
    write("frame_reader", "at_limit_prefix", bytes([255, 0x10, 0x00]) + bytes(4096))

    video, key = 1, 2
    write("reassembler", "one_frame_three_fragments_reordered",
          fragment(0, video | key, 0, 2, 3, 40) + fragment(0, video | key, 0, 0, 3, 40)
          + fragment(0, video | key, 0, 1, 3, 40))
    write("reassembler", "duplicates_and_late",
          fragment(1, video, 5, 0, 2, 10) + fragment(1, video, 5, 0, 2, 10)
          + fragment(1, video, 5, 1, 2, 10) + fragment(1, video, 5, 1, 2, 10))
    write("reassembler", "lost_fragment_then_next_frame",
          fragment(0, video | key, 0, 0, 1, 5) + fragment(0, video, 1, 0, 2, 5)
          + fragment(0, video, 2, 0, 1, 5) + fragment(0, video, 1, 1, 2, 5))
    write("reassembler", "more_partials_than_the_bound",
          b"".join(fragment(0, video | 8, f, 0, 256, 255) for f in range(8)))
    write("reassembler", "audio_and_video_two_pairings",
          fragment(0, 0, 0, 0, 1, 20) + fragment(0, video, 0, 0, 1, 20)
          + fragment(1, 0, 0, 0, 1, 20) + fragment(0x80, video | 4, 0xFFFF, 0, 1, 20))
    write("reassembler", "bad_counts",
          fragment(0, video, 3, 3, 3, 1) + fragment(0, video, 3, 0, 0, 1)
          + fragment(0, video, 3, 0, 257, 1) + fragment(0, video, 3, 0, 2, 1)
          + fragment(0, video, 3, 1, 4, 1))


if __name__ == "__main__":
    main()
