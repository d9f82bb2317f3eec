#!/usr/bin/env bash
# Build (or reuse) the emulated board: Debian 12 arm64 (Python 3.11, glibc 2.36, systemd 252) from
# Debian's archive with mmdebstrap, for `make board-test`. Runs as root on the host.
#
#   deploy/board-test/build-image.sh CACHE_DIR     # prints the image directory on stdout
#
# The image directory is CACHE_DIR/<hash of this script>: a new recipe gets a new directory, the
# same recipe is reused. It holds rootfs.raw (ext4, the board's disk; runs use a qcow2 overlay
# on top, so it stays clean), vmlinuz and initrd.img (booted directly, no firmware), and the
# ssh key root logs in with (board_key, board_key.pub).
#
# Needs: mmdebstrap, qemu-user-static with binfmt_misc for aarch64 (maintainer scripts run
# under qemu-user), e2fsprogs (mkfs.ext4 -d), openssh-client.
set -euo pipefail

CACHE=${1:?usage: build-image.sh CACHE_DIR}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KEY=$(sha256sum "$HERE/build-image.sh" | cut -c1-16)
OUT="$CACHE/debian12-arm64-$KEY"
log() { printf 'board-image: %s\n' "$*" >&2; }
die() { printf 'board-image: error: %s\n' "$*" >&2; exit 1; }

if [[ -f "$OUT/.complete" ]]; then
    log "reusing $OUT"
    printf '%s\n' "$OUT"
    exit 0
fi
[[ $(id -u) == 0 ]] || die "run as root (mmdebstrap builds the root file system as root)"
command -v mmdebstrap >/dev/null || die "mmdebstrap missing (apt-get install mmdebstrap)"

# aarch64 maintainer scripts run under qemu-user through binfmt_misc, as on any Debian machine
# with qemu-user-static installed; a container may need the file system mounted first.
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    [[ -e /proc/sys/fs/binfmt_misc/register ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
        die "binfmt_misc is not available: cannot run arm64 maintainer scripts"
    update-binfmts --enable qemu-aarch64 || die "cannot enable qemu-aarch64 in binfmt_misc (apt-get install qemu-user-static)"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fer-board-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ssh-keygen -q -t ed25519 -N '' -C fer-board-test -f "$OUT/board_key"

# The initramfs only needs what mounts a virtio disk: MODULES=list instead of Debian's "most"
# (building that initrd under qemu-user takes about 20 minutes more).
# shellcheck disable=SC2016  # expanded by mmdebstrap ($1: the root being built)
SETUP='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"
printf "MODULES=list\nCOMPRESS=gzip\n" >"$1/etc/initramfs-tools/conf.d/fer-board"
printf "%s\n" virtio_pci virtio_mmio virtio_blk virtio_net ext4 >"$1/usr/share/initramfs-tools/modules.d/fer-board"'
# shellcheck disable=SC2016
CUSTOMIZE='set -e
echo fer-board >"$1/etc/hostname"
printf "127.0.1.1 fer-board\n" >>"$1/etc/hosts"
printf "/dev/vda / ext4 defaults 0 1\n" >"$1/etc/fstab"
printf "[Match]\nName=en*\n[Network]\nDHCP=yes\n" >"$1/etc/systemd/network/10-user.network"
chroot "$1" systemctl enable systemd-networkd ssh
mkdir -p -m 700 "$1/root/.ssh"
install -m 600 "'"$OUT"'/board_key.pub" "$1/root/.ssh/authorized_keys"
printf "PermitRootLogin prohibit-password\nUseDNS no\n" >"$1/etc/ssh/sshd_config.d/fer-board.conf"
rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages'
log "building Debian 12 arm64 from $MIRROR (mmdebstrap) ..."
mmdebstrap --arch=arm64 --variant=apt --mode=root --format=directory \
    --include=systemd-sysv,udev,dbus,openssh-server,python3,python3-venv,sudo,kmod,initramfs-tools,linux-image-arm64,iproute2,procps,less \
    --setup-hook="$SETUP" --customize-hook="$CUSTOMIZE" \
    bookworm "$WORK/root" "$MIRROR" >&2
cp "$WORK"/root/boot/vmlinuz-* "$OUT/vmlinuz"
cp "$WORK"/root/boot/initrd.img-* "$OUT/initrd.img"
log "making the ext4 disk ..."
mkfs.ext4 -q -F -L root -d "$WORK/root" "$OUT/rootfs.raw" 4G
date -u +%FT%TZ >"$OUT/.complete"
log "image ready: $OUT ($(du -sh --apparent-size "$OUT/rootfs.raw" | cut -f1) disk, $(du -sh "$OUT/rootfs.raw" | cut -f1) used)"
printf '%s\n' "$OUT"
