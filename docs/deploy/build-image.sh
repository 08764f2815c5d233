#!/usr/bin/env bash
# Build incproto's container image with podman's tools, no registry needed:
#   1. the base, debian:bookworm-slim, made from Debian's packages with
#      mmdebstrap as the official image is (a minbase bookworm, without
#      documentation, manual pages or translations, and apt configured to
#      keep no downloaded packages or caches in the image's layers), tagged
#      localhost/debian:bookworm-slim; kept if already there, unless
#      FRESH_BASE=1;
#   2. incproto's wheel, into dist/;
#   3. docs/deploy/Dockerfile, with buildah bud --isolation chroot: the
#      dependencies pinned and hashed (docs/deploy/requirements.txt), then
#      the wheel.
# Usage, from anywhere, as root (CI runs it):
#   docs/deploy/build-image.sh [IMAGE]
# IMAGE defaults to ghcr.io/incproto/incproto:VERSION, the name the
# manifests pull; push it with: podman push IMAGE (after podman login
# ghcr.io). PYTHON (default python3) builds the wheel. Needs: mmdebstrap,
# podman, buildah (Debian's packages; docs/deployment.md#the-image).
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' incproto/_version.py)
image=${1:-ghcr.io/incproto/incproto:$version}
base=localhost/debian:bookworm-slim
python=${PYTHON:-python3}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

if [ "${FRESH_BASE:-0}" = 1 ] || ! podman image exists "$base"; then
    # As the official image's docker-clean: apt-get in a Dockerfile leaves no
    # downloaded packages or package caches in the layer.
    printf '%s\n' 'APT::Keep-Downloaded-Packages "false";' \
        'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' \
        > "$scratch/docker-clean"
    # The hooks' "$1" is the root being made, given them by mmdebstrap.
    # shellcheck disable=SC2016
    mmdebstrap --variant=minbase --format=tar \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/groff/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --customize-hook="copy-in $scratch/docker-clean /etc/apt/apt.conf.d" \
        --customize-hook='rm -f "$1"/var/cache/apt/*.bin' \
        bookworm "$scratch/rootfs.tar" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian bookworm-updates main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    podman import --change 'CMD ["bash"]' "$scratch/rootfs.tar" "$base"
fi

# The wheel, from a copy of what it is made of: setuptools would otherwise
# reuse the checkout's build/ (and package files deleted since).
mkdir "$scratch/source"
cp -r setup.py pyproject.toml README.md LICENSE incproto twisted "$scratch/source"
rm -f "dist/incproto-$version-py3-none-any.whl"
"$python" -m pip wheel --quiet --no-deps --wheel-dir dist "$scratch/source"

# pip in the build reaches PyPI; a TLS-inspecting proxy's CA reaches it as
# a build secret (not stored in the image).
secret=()
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$cert" ]; then
    secret=(--secret "id=pip-cert,src=$cert")
fi
buildah bud --isolation chroot --pull-never --layers \
    "${secret[@]}" --build-arg "VERSION=$version" \
    -f docs/deploy/Dockerfile -t "$image" .
