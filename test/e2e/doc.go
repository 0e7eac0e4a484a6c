// Package e2e holds banger's end-to-end tier: real guests booted under QEMU
// (TCG here) through the real daemon and CLI binaries, with all VM
// networking inside a network namespace the test creates.
package e2e
