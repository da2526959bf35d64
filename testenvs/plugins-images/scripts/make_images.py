"""Writes the plugins-images scenario's data: 5,000 real MNIST digits as PNG files and two
Ianvs index files (``images/00000.png 7`` lines), from ``datasets/mnist/mnist_5k.csv.gz``.

Standard library only (the PNGs are written with zlib), so it runs before anything is
installed. Every 5th digit goes to the test index (4,000 train / 1,000 test), the same split
as ``testenvs/plugins-mnist`` (``interleaved``, ``test_fraction: 0.2``), so the two scenarios
can be compared digit for digit.

    python3 testenvs/plugins-images/scripts/make_images.py [OUT_DIR]

OUT_DIR defaults to ``testenvs/plugins-images/data`` (git-ignored). Rerunning rewrites the
same bytes.
"""

import gzip
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
CSV = os.path.join(ROOT, "datasets", "mnist", "mnist_5k.csv.gz")


def png_gray(width, height, pixels):
    """An 8-bit greyscale PNG (colour type 0) of ``pixels`` (row-major bytes)."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(pixels[y * width:(y + 1) * width]) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def main():
    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "data"))
    images = os.path.join(out, "images")
    os.makedirs(images, exist_ok=True)
    train, test = [], []
    with gzip.open(CSV, "rt") as f:
        rows = [line.strip().split(",") for line in f if line.strip()]
    if not rows[0][0].strip().isdigit():
        rows = rows[1:]  # a header row
    for i, row in enumerate(rows):
        pixels, label = [int(v) for v in row[:-1]], int(row[-1])
        name = f"images/{i:05d}.png"
        with open(os.path.join(out, name), "wb") as f:
            f.write(png_gray(28, 28, pixels))
        (test if i % 5 == 4 else train).append(f"{name} {label}\n")
    for fname, lines in [("train_index.txt", train), ("test_index.txt", test)]:
        with open(os.path.join(out, fname), "w", encoding="utf-8") as f:
            f.writelines(lines)
    print(f"{len(rows)} PNG digits in {images}; {len(train)} train / {len(test)} test index lines")


if __name__ == "__main__":
    main()
