#!/usr/bin/env bash
# Put Fashion-MNIST where configs/fashion_mnist/ expect it.
#
#   bash tools/misc/prepare_fashion_mnist.sh [DEST]     (default data/fashion_mnist)
#
# mmpretrain's FashionMNIST dataset reads the four idx files, uncompressed,
# from its data_root:
#   train-images-idx3-ubyte  train-labels-idx1-ubyte
#   t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte
# They come, in this order of preference, from
#   1. $FASHION_MNIST_SRC (default /usr/share/datasets/fashion-mnist, where
#      the Debian package dataset-fashion-mnist puts the .gz files); the
#      package is installed with apt-get first when apt is there, we are root
#      and the directory is missing (--no-apt: never);
#   2. mmpretrain's own download (needs internet; --no-download: never);
#   3. otherwise: one "error:" line saying what to put where, exit status 1.
# Does nothing when DEST already holds four consistent files. Each file is
# written to a temporary name beside it and renamed, so DEST never holds a
# half-written file. Prints the number of images of each split.
set -euo pipefail

usage() {
    echo "usage: $0 [--no-apt] [--no-download] [DEST]" >&2
    exit 2
}

USE_APT=1
USE_DOWNLOAD=1
DEST=
for arg in "$@"; do
    case "$arg" in
        --no-apt) USE_APT=0 ;;
        --no-download) USE_DOWNLOAD=0 ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) [ -z "$DEST" ] || usage; DEST=$arg ;;
    esac
done
DEST=${DEST:-data/fashion_mnist}
SRC=${FASHION_MNIST_SRC:-/usr/share/datasets/fashion-mnist}
DEBIAN_SRC=/usr/share/datasets/fashion-mnist
HERE=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$HERE/.venv/bin/python" ]; then PYTHON=$HERE/.venv/bin/python
    else PYTHON=python3; fi
fi
FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"

die() {
    echo "error: $*" >&2
    exit 1
}

# Big-endian unsigned 32-bit integer at byte offset $2 of file $1.
u32() {
    local b
    b=($(od -An -tu1 -j "$2" -N4 "$1"))
    [ ${#b[@]} -eq 4 ] || { echo -1; return; }
    echo $(( (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3] ))
}

# Number of items of idx file $1 if its header and size are consistent
# (images: magic 2051, n x rows x cols bytes; labels: magic 2049, n bytes),
# else nothing.
idx_count() {
    local f=$1 magic n size
    [ -s "$f" ] || return 0
    magic=$(u32 "$f" 0); n=$(u32 "$f" 4)
    size=$(stat -c %s "$f")
    if [ "$magic" = 2051 ]; then
        [ "$size" = $(( 16 + n * $(u32 "$f" 8) * $(u32 "$f" 12) )) ] && echo "$n"
    elif [ "$magic" = 2049 ]; then
        [ "$size" = $(( 8 + n )) ] && echo "$n"
    fi
    return 0
}

# "train N test M" when DIR ($1) holds four consistent files, else nothing.
complete() {
    local dir=$1 ti tl vi vl
    ti=$(idx_count "$dir/train-images-idx3-ubyte")
    tl=$(idx_count "$dir/train-labels-idx1-ubyte")
    vi=$(idx_count "$dir/t10k-images-idx3-ubyte")
    vl=$(idx_count "$dir/t10k-labels-idx1-ubyte")
    if [ -n "$ti" ] && [ "$ti" = "$tl" ] && [ -n "$vi" ] && [ "$vi" = "$vl" ]; then
        echo "train $ti test $vi"
    fi
}

report() {
    local counts
    counts=($(complete "$DEST"))
    echo "Fashion-MNIST in $DEST: ${counts[1]} training and ${counts[3]} test images ($1)"
}

# Remove staging directory $1, and DEST too if that leaves it empty (an empty
# data_root would pass the training pre-flight check and fail later).
abandon() {
    rm -rf "$1"
    rmdir "$DEST" 2>/dev/null || true
}

# Copy (gunzip when needed) the four files from directory $1 into DEST:
# all four are written and checked in a temporary directory inside DEST
# first, then renamed into place, so a bad source leaves DEST as it was.
copy_from() {
    local src=$1 name stage
    for name in $FILES; do
        if [ -f "$src/$name.gz" ] || [ -f "$src/$name" ]; then continue; fi
        return 1
    done
    mkdir -p "$DEST"
    stage=$(mktemp -d "$DEST/.prepare.XXXXXX")
    for name in $FILES; do
        if [ -f "$src/$name.gz" ]; then
            gunzip -c "$src/$name.gz" > "$stage/$name" 2>/dev/null || {
                abandon "$stage"; die "$src/$name.gz is not a valid gzip file; reinstall or replace it"; }
        else
            cp "$src/$name" "$stage/$name"
        fi
        if [ -z "$(idx_count "$stage/$name")" ]; then
            abandon "$stage"
            die "$src/$name: not an idx file (bad header or size); replace it with the file from https://github.com/zalandoresearch/fashion-mnist"
        fi
    done
    if [ -z "$(complete "$stage")" ]; then
        abandon "$stage"
        die "the files in $src do not agree (image and label counts differ); replace them"
    fi
    for name in $FILES; do
        chmod 644 "$stage/$name"
        mv -f "$stage/$name" "$DEST/$name"
    done
    rmdir "$stage"
}

download() {
    local tmpdir
    mkdir -p "$DEST"
    tmpdir=$(mktemp -d "$DEST/.download.XXXXXX")
    if "$PYTHON" - "$tmpdir" >/dev/null 2>&1 <<'EOF'
import sys
from mmpretrain.datasets import FashionMNIST
for split in ('train', 'test'):
    FashionMNIST(data_root=sys.argv[1], split=split, download=True)
EOF
    then
        FASHION_MNIST_SRC= copy_from "$tmpdir" && { rm -rf "$tmpdir"; return 0; }
    fi
    abandon "$tmpdir"
    return 1
}

if [ -n "$(complete "$DEST")" ]; then
    report "already prepared"
    exit 0
fi

if copy_from "$SRC"; then
    report "from $SRC"
    exit 0
fi

if [ "$USE_APT" = 1 ] && [ "$SRC" = "$DEBIAN_SRC" ] && command -v apt-get >/dev/null \
        && [ "$(id -u)" = 0 ]; then
    echo "installing the Debian package dataset-fashion-mnist" >&2
    if (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
            && copy_from "$SRC"; then
        report "from the Debian package"
        exit 0
    fi
fi

if [ "$USE_DOWNLOAD" = 1 ]; then
    echo "downloading with mmpretrain's FashionMNIST (needs internet)" >&2
    if download; then
        report "downloaded"
        exit 0
    fi
fi

die "Fashion-MNIST not found: install the Debian package (apt-get install dataset-fashion-mnist), or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (https://github.com/zalandoresearch/fashion-mnist) into a directory and run FASHION_MNIST_SRC=DIR $0"
