package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/config"
	"banger/internal/daemon/qemu"
	"banger/internal/daemon/vmnet"
	"banger/internal/guest"
	"banger/internal/layout"
	"banger/internal/store"
	"banger/internal/system"
)

// vmManager runs VMs: create, exec, rm. Its own type with explicit
// dependencies; the per-VM lock set is the Daemon's vmLocks.
type vmManager struct {
	layout layout.Layout
	config config.Config
	store  *store.Store
	runner system.Runner
	logger *slog.Logger
	images *imageManager
	locks  *vmLockSet // &Daemon.vmLocks: held across each lifecycle op on a VM
	// startOp starts an async operation on the daemon's context.
	startOp func(ctx context.Context, kind, target string, fn opFunc) (string, error)
	vmm     string // "qemu" or "firecracker", decided at Open

	// createVMMu serialises the name-uniqueness check and the guest IP
	// window of vm.create: held across choosing a free IP and recording
	// the VM row and its allocation, nothing else.
	createVMMu sync.Mutex

	// handles is the in-memory cache of each VM's transient host handles.
	handles *handleCache

	// caps are the registered capability hooks (the blueprint's vmCaps),
	// set at Open and read-only after: see vmCap.
	caps []vmCap

	// ctx is the daemon's long-lived context (cancelled at shutdown);
	// the exit watchers run under it and are counted by watchers.
	ctx      context.Context
	watchers sync.WaitGroup

	// netMu guards net: the VM network is set up on first use, so a
	// daemon that never runs a VM never touches the host's network.
	netMu sync.Mutex
	net   *vmnet.Network // guarded by netMu

	// Injectable seams.
	//
	// guestWaitForSSH waits until the guest's SSH answers.
	guestWaitForSSH func(ctx context.Context, t guest.Target) (*ssh.Client, error)
	// guestDial opens a connection to a guest (in the VM network's
	// namespace).
	guestDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// launchVMM starts the VMM for one boot (launch: QEMU or Firecracker).
	launchVMM func(ctx context.Context, spec bootSpec) (vmProcess, error)
}

func newVMManager(d *Daemon) *vmManager {
	m := &vmManager{
		layout:  d.layout,
		config:  d.config,
		store:   d.store,
		runner:  d.runner,
		logger:  d.logger,
		images:  d.images,
		locks:   &d.vmLocks,
		startOp: d.startOp,
		vmm:     chooseVMM(d.config),
		handles: newHandleCache(),
		ctx:     d.opsCtx,
	}
	m.caps = defaultCaps(m)
	m.guestDial = m.dialInNetNS
	m.launchVMM = m.launch
	m.guestWaitForSSH = func(ctx context.Context, t guest.Target) (*ssh.Client, error) {
		return guest.WaitForSSH(ctx, t, 100*time.Millisecond)
	}
	return m
}

// chooseVMM applies the config's vmm: "auto" is Firecracker where KVM works
// and the binary exists, else QEMU.
func chooseVMM(cfg config.Config) string {
	switch cfg.VMM {
	case "qemu", "firecracker":
		return cfg.VMM
	}
	if _, err := exec.LookPath(cfg.FirecrackerBinary); err == nil && qemu.KVMUsable() {
		return "firecracker"
	}
	return "qemu"
}

// network returns the VM network, setting it up on first use.
func (m *vmManager) network(ctx context.Context) (*vmnet.Network, error) {
	m.netMu.Lock()
	defer m.netMu.Unlock()
	if m.net != nil {
		return m.net, nil
	}
	cfg, err := m.netConfig()
	if err != nil {
		return nil, err
	}
	n, err := vmnet.New(cfg, m.logger)
	if err != nil {
		return nil, err
	}
	if err := n.Setup(ctx); err != nil {
		n.Close()
		return nil, fmt.Errorf("set up the VM network: %w", err)
	}
	m.net = n
	return n, nil
}

func (m *vmManager) netConfig() (vmnet.Config, error) {
	c := vmnet.Config{
		Bridge:            m.config.Bridge,
		Domain:            m.config.Domain,
		NetNS:             m.config.NetNS,
		TAPPoolSize:       m.config.TAPPoolSize,
		AllowGuestToGuest: m.config.AllowGuestToGuest,
	}
	if m.config.JailerBinary != "" {
		// A jailed Firecracker has no CAP_NET_ADMIN: its TAP must be
		// made for its uid and gid.
		c.TAPOwner = vmnet.TAPOwner{UID: uint32(m.config.JailerUID), GID: uint32(m.config.JailerGID)}
	}
	if m.config.TAPPoolSize == 0 {
		c.TAPPoolSize = -1
	}
	var err error
	if c.Subnet, err = parsePrefix(m.config.Subnet); err != nil {
		return c, err
	}
	if len(m.config.DNSUpstreams) > 0 {
		if c.Upstreams, err = parseUpstreams(m.config.DNSUpstreams); err != nil {
			return c, err
		}
	}
	return c, nil
}

// close stops the network's services (DNS, the TAP pool's refills); the
// bridge, TAPs and rules stay for the VMs that outlive the daemon.
func (m *vmManager) close() error {
	m.watchers.Wait()
	m.netMu.Lock()
	defer m.netMu.Unlock()
	if m.net == nil {
		return nil
	}
	err := m.net.Close()
	m.net = nil
	return err
}

// dialInNetNS dials from inside the VM network's namespace.
func (m *vmManager) dialInNetNS(ctx context.Context, network, addr string) (net.Conn, error) {
	n, err := m.network(ctx)
	if err != nil {
		return nil, err
	}
	var conn net.Conn
	var d net.Dialer
	err = n.Namespace().Do(func() error {
		var derr error
		conn, derr = d.DialContext(ctx, network, addr)
		return derr
	})
	return conn, err
}
