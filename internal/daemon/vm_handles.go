package daemon

import (
	"context"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/dmsnap"
)

// vmProcess is a running VMM, QEMU or Firecracker.
type vmProcess interface {
	PID() int
	Done() <-chan struct{}
	Shutdown(ctx context.Context, grace time.Duration) error
	Kill() error
}

// vmHandles are one VM's transient host handles: what the kernel and the
// processes hold for it. They live here and in vms/ID/handles.json,
// never in the store.
//
// Every field is written and read under vmLocks[id], except IP and
// HostKey, which list and show read without it: those are written holding
// both vmLocks[id] and handleCache.mu (handleCache.set) and read holding
// either (handleCache.view).
type vmHandles struct {
	VMM string `json:"vmm"`
	PID int    `json:"pid"`
	// PIDStart and VMMExe identify the VMM process beyond its PID (see
	// verifyVMM): its start time in clock ticks since boot and its
	// executable.
	PIDStart   uint64     `json:"pid_start,omitempty"`
	VMMExe     string     `json:"vmm_exe,omitempty"`
	TAP        string     `json:"tap"`
	IP         netip.Addr `json:"ip"`
	HostKey    string     `json:"host_key,omitempty"` // authorized_keys format
	VMMSocket  string     `json:"vmm_socket"`
	ConsoleLog string     `json:"console_log"`
	DiskPath   string     `json:"disk"`
	DiskKind   string     `json:"disk_strategy"`
	// DMSnap holds the device-mapper objects of a dmsnap disk.
	DMSnap *dmsnap.Handles `json:"dmsnap,omitempty"`
	// Jail is where a jailed Firecracker's jail was made, recorded before
	// it is: the config's jailer settings may change before the VM goes.
	Jail *jailPlace `json:"jail,omitempty"`

	proc    vmProcess     `json:"-"`
	hostKey ssh.PublicKey `json:"-"`
	signer  ssh.Signer    `json:"-"`
}

// handleCache maps VM ids to their handles. It owns its lock (a leaf).
type handleCache struct {
	mu sync.Mutex
	m  map[string]*vmHandles // guarded by mu
}

func newHandleCache() *handleCache { return &handleCache{m: make(map[string]*vmHandles)} }

func (c *handleCache) get(id string) (*vmHandles, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[id]
	return h, ok
}

func (c *handleCache) put(id string, h *vmHandles) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[id] = h
}

// set applies change, which may write the IP and HostKey of cached
// handles, under the cache's lock; the caller holds the VM's lock.
func (c *handleCache) set(change func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	change()
}

// view copies the fields readers without the VM's lock may see.
func (c *handleCache) view(id string) (ip netip.Addr, hostKey string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[id]
	if !ok {
		return netip.Addr{}, "", false
	}
	return h.IP, h.HostKey, true
}

func (c *handleCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// writeHandles records h in path atomically (temp file, fsync, rename).
func writeHandles(path string, h *vmHandles) error {
	return writeJSONFile(path, h, 0o600)
}

func removeHandles(path string) error {
	err := os.Remove(path)
	if os.IsNotExist(err) {
		return nil
	}
	return err
}
