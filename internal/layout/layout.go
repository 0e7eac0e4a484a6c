// Package layout names every path banger uses under its state root, and
// the default locations outside it. No other package joins paths under the
// root by hand: add a method here instead, so this file stays the one
// place that lists what can appear on disk.
//
//	ROOT/
//	  banger.db            SQLite store (plus banger.db-wal, banger.db-shm)
//	  banger.pid           pid file; flock'ed by the running daemon (single instance)
//	  staging/             temporary trees of in-flight pulls/imports; swept at start
//	  layers/sha256/HEX    OCI layer blobs cached by digest, shared by images
//	  images/ID/           one directory per image
//	    rootfs.ext4        the image's read-only root filesystem
//	    config.json        the OCI image config banger recorded (entrypoint, env, ...)
//	  kernels/ID/          one directory per guest kernel
//	    vmlinux            uncompressed x86_64 ELF kernel
//	    initrd.img         optional initramfs
//	  vms/ID/              one directory per VM
//	    disk.ext4          the VM's copy-on-write disk (reflink/sparse copy strategies)
//	    disk.cow           the snapshot's exception store (dmsnap strategy)
//	    handles.json       transient host handles (PID, TAP, loop, dm) for reconciliation
//	    console.log        serial console output
//	    vmm.sock           Firecracker API socket or QEMU QMP socket
//	    vmm.log            the VMM's own log
//	    ssh_host_key       the guest's SSH host key, provisioned by the daemon
//	    id_ed25519         the daemon's client key for this VM
package layout

import (
	"path/filepath"
	"strings"
)

// Defaults outside the state root.
const (
	DefaultRoot       = "/var/lib/banger"
	DefaultSocket     = "/run/banger/banger.sock"
	DefaultConfigFile = "/etc/banger/config.toml"
	DefaultGroup      = "banger"
)

// Layout resolves paths under one state root.
type Layout struct {
	Root string
}

// New returns the layout of root, cleaned. root must be absolute.
func New(root string) Layout { return Layout{Root: filepath.Clean(root)} }

func (l Layout) DB() string      { return filepath.Join(l.Root, "banger.db") }
func (l Layout) PIDFile() string { return filepath.Join(l.Root, "banger.pid") }

func (l Layout) StagingDir() string { return filepath.Join(l.Root, "staging") }
func (l Layout) LayersDir() string  { return filepath.Join(l.Root, "layers") }

// LayerBlob is the cache path of a layer blob with digest "ALG:HEX". The
// caller must have validated the digest (no separators in either part).
func (l Layout) LayerBlob(digest string) string {
	alg, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(l.LayersDir(), alg, hex)
}

func (l Layout) ImagesDir() string             { return filepath.Join(l.Root, "images") }
func (l Layout) ImageDir(id string) string     { return filepath.Join(l.ImagesDir(), id) }
func (l Layout) ImageRootfs(id string) string  { return filepath.Join(l.ImageDir(id), "rootfs.ext4") }
func (l Layout) ImageConfig(id string) string  { return filepath.Join(l.ImageDir(id), "config.json") }
func (l Layout) KernelsDir() string            { return filepath.Join(l.Root, "kernels") }
func (l Layout) KernelDir(id string) string    { return filepath.Join(l.KernelsDir(), id) }
func (l Layout) KernelImage(id string) string  { return filepath.Join(l.KernelDir(id), "vmlinux") }
func (l Layout) KernelInitrd(id string) string { return filepath.Join(l.KernelDir(id), "initrd.img") }

func (l Layout) VMsDir() string                { return filepath.Join(l.Root, "vms") }
func (l Layout) VMDir(id string) string        { return filepath.Join(l.VMsDir(), id) }
func (l Layout) VMDisk(id string) string       { return filepath.Join(l.VMDir(id), "disk.ext4") }
func (l Layout) VMCOW(id string) string        { return filepath.Join(l.VMDir(id), "disk.cow") }
func (l Layout) VMHandles(id string) string    { return filepath.Join(l.VMDir(id), "handles.json") }
func (l Layout) VMConsoleLog(id string) string { return filepath.Join(l.VMDir(id), "console.log") }
func (l Layout) VMMSocket(id string) string    { return filepath.Join(l.VMDir(id), "vmm.sock") }
func (l Layout) VMMLog(id string) string       { return filepath.Join(l.VMDir(id), "vmm.log") }
func (l Layout) VMHostKey(id string) string    { return filepath.Join(l.VMDir(id), "ssh_host_key") }
func (l Layout) VMClientKey(id string) string  { return filepath.Join(l.VMDir(id), "id_ed25519") }

// Dirs lists the directories the daemon creates at Open, parents first.
func (l Layout) Dirs() []string {
	return []string{l.Root, l.StagingDir(), l.LayersDir(), l.ImagesDir(), l.KernelsDir(), l.VMsDir()}
}
