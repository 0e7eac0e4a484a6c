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
type vmHandles struct {
	VMM        string     `json:"vmm"`
	PID        int        `json:"pid"`
	TAP        string     `json:"tap"`
	IP         netip.Addr `json:"ip"`
	HostKey    string     `json:"host_key,omitempty"` // authorized_keys format
	VMMSocket  string     `json:"vmm_socket"`
	ConsoleLog string     `json:"console_log"`
	DiskPath   string     `json:"disk"`
	DiskKind   string     `json:"disk_strategy"`
	// DMSnap holds the device-mapper objects of a dmsnap disk.
	DMSnap *dmsnap.Handles `json:"dmsnap,omitempty"`

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
