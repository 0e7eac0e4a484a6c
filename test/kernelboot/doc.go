// Package kernelboot holds the end-to-end check that the guest kernel and
// initramfs made by scripts/guest-kernel.sh boot a raw ext4 root disk under
// QEMU's microvm machine. It has no code of its own: see its tests.
//
// Environment:
//
//	BANGER_TEST_KERNEL_DIR      use vmlinux, initrd and kernel.txt from this dir
//	                            instead of building them (and caching them under
//	                            /var/cache/banger-test)
//	BANGER_TEST_REQUIRE_QEMU=1  fail instead of skipping when not root or when
//	                            qemu-system-x86_64 is missing
package kernelboot
