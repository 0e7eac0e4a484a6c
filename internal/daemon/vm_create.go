package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"banger/internal/daemon/opstate"
	"banger/internal/daemon/vmdisk"
	"banger/internal/daemon/vmnet"
	"banger/internal/errdefs"
	"banger/internal/guest"
	"banger/internal/rpc"
	"banger/internal/store"
)

// vmOptions are a VM's settings kept in the row's options_json.
type vmOptions struct {
	Entrypoint bool `json:"entrypoint,omitempty"`
}

func optionsOf(vm store.VM) vmOptions {
	var o vmOptions
	json.Unmarshal(vm.Options, &o)
	return o
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("address %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return a, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, fmt.Errorf("subnet %q: %v: %w", s, err, errdefs.ErrInvalidArgument)
	}
	return p, nil
}

func parseUpstreams(list []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, u := range list {
		if ap, err := netip.ParseAddrPort(u); err == nil {
			out = append(out, ap)
			continue
		}
		a, err := netip.ParseAddr(u)
		if err != nil {
			return nil, fmt.Errorf("dns upstream %q: %w", u, errdefs.ErrInvalidArgument)
		}
		out = append(out, netip.AddrPortFrom(a, 53))
	}
	return out, nil
}

// validVMName: a VM's name is its guest's host name and DNS label.
func validVMName(name string) error {
	if name == "" || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return fmt.Errorf("vm name %q: want 1-63 letters, digits and inner '-' (it is the guest's host name): %w", name, errdefs.ErrInvalidArgument)
	}
	for _, r := range name {
		if !(r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("vm name %q: want lower-case letters, digits and inner '-' (it is the guest's host name): %w", name, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// create records the VM (name and IP under createVMMu) and boots it as an
// async operation with phases image, disk, network, boot, ssh. A failure
// at any phase releases everything the create took, the row included.
func (m *vmManager) create(ctx context.Context, call *rpc.Call) (rpc.VMStarted, error) {
	var p rpc.VMCreateParams
	if err := call.Bind(&p); err != nil {
		return rpc.VMStarted{}, err
	}
	if p.Image == "" {
		return rpc.VMStarted{}, rpc.Errorf(rpc.CodeInvalidParams, "invalid params for %s: image is required", call.Method)
	}
	if p.Name == "" {
		var b [3]byte
		rand.Read(b[:])
		p.Name = "vm-" + hex.EncodeToString(b[:])
	}
	if err := validVMName(p.Name); err != nil {
		return rpc.VMStarted{}, err
	}
	if p.VCPUs == 0 {
		p.VCPUs = m.config.VMVCPUs
	}
	if p.MemoryMiB == 0 {
		p.MemoryMiB = m.config.VMMemoryMiB
	}
	if p.VCPUs < 1 || p.VCPUs > 64 || p.MemoryMiB < 64 || p.MemoryMiB > 1<<20 || p.DiskGiB < 0 || p.DiskGiB > 16<<10 {
		return rpc.VMStarted{}, fmt.Errorf("vcpus %d, memory %d MiB, disk %d GiB: want 1-64 vCPUs, 64 MiB-1 TiB of memory, a disk of at most 16 TiB: %w", p.VCPUs, p.MemoryMiB, p.DiskGiB, errdefs.ErrInvalidArgument)
	}
	if err := m.checkHostFits(p.MemoryMiB, p.DiskGiB); err != nil {
		return rpc.VMStarted{}, err
	}
	im, err := m.store.ResolveImage(ctx, p.Image)
	if err != nil {
		return rpc.VMStarted{}, err
	}
	if im.State != store.ImageReady {
		return rpc.VMStarted{}, fmt.Errorf("image %q is %s, not ready: %w", im.Name, im.State, errdefs.ErrFailedPrecondition)
	}
	kernel, err := m.pickKernel(ctx, p.Kernel, im)
	if err != nil {
		return rpc.VMStarted{}, err
	}
	disk := int64(p.DiskGiB) << 30
	if disk == 0 {
		disk = im.SizeBytes
	}
	if disk < im.SizeBytes {
		return rpc.VMStarted{}, fmt.Errorf("--disk %d GiB is smaller than image %q (%d MiB): %w", p.DiskGiB, im.Name, im.SizeBytes>>20, errdefs.ErrInvalidArgument)
	}
	n, err := m.network(ctx)
	if err != nil {
		return rpc.VMStarted{}, err
	}

	opts, err := json.Marshal(vmOptions{Entrypoint: p.Entrypoint})
	if err != nil {
		return rpc.VMStarted{}, err
	}
	vm, ip, err := m.record(ctx, store.VM{
		Name: p.Name, ImageID: im.ID, KernelID: kernel.ID, State: store.VMCreated,
		VCPUs: p.VCPUs, MemoryMiB: p.MemoryMiB, DiskBytes: disk, VMM: store.VMM(m.vmm),
		Options: opts,
	}, n)
	if err != nil {
		return rpc.VMStarted{}, err
	}
	crashPoint("create.recorded")
	opID, err := m.startOp(ctx, rpc.MethodVMCreate, vm.Name, func(ctx context.Context, report func(opstate.Progress)) (any, error) {
		unlock, err := m.locks.Lock(ctx, vm.ID)
		if err != nil {
			// Cancelled while waiting: release the recorded VM, still
			// under its lock, so no other op on it races the release.
			if unlock, lerr := m.locks.Lock(context.WithoutCancel(ctx), vm.ID); lerr == nil {
				m.destroy(context.Background(), vm.ID, 0)
				unlock()
			}
			return nil, err
		}
		defer unlock()
		if err := m.boot(ctx, vm, im, kernel, ip, n, report); err != nil {
			if derr := m.destroy(context.Background(), vm.ID, 0); derr != nil {
				m.logger.Error("release a VM whose create failed", "vm", vm.Name, "err", derr)
			}
			return nil, fmt.Errorf("create vm %q: %w", vm.Name, err)
		}
		got, err := m.store.GetVM(context.Background(), vm.ID)
		if err != nil {
			return nil, err
		}
		return m.toRPC(got), nil
	})
	if err != nil {
		m.destroy(context.Background(), vm.ID, 0)
		return rpc.VMStarted{}, err
	}
	return rpc.VMStarted{OpID: opID, VM: m.toRPC(vm)}, nil
}

// checkHostFits refuses memory beyond the host's RAM and a disk larger
// than the filesystem holding the VMs' disks (growing an ext4 image that
// large writes its metadata, and it could never fill it): a VM asking for
// more can never have it. Zero means not asked.
func (m *vmManager) checkHostFits(memoryMiB, diskGiB int) error {
	var si unix.Sysinfo_t
	if memoryMiB > 0 && unix.Sysinfo(&si) == nil {
		if host := uint64(si.Totalram) * uint64(si.Unit) >> 20; uint64(memoryMiB) > host {
			return fmt.Errorf("memory %d MiB is more than this host has (%d MiB): give a smaller --mem: %w", memoryMiB, host, errdefs.ErrInvalidArgument)
		}
	}
	var st unix.Statfs_t
	if diskGiB > 0 && unix.Statfs(m.layout.Root, &st) == nil {
		if fs := st.Blocks * uint64(st.Bsize); uint64(diskGiB)<<30 > fs {
			return fmt.Errorf("disk %d GiB is more than the filesystem holding banger's VMs (%d GiB): give a smaller --disk: %w", diskGiB, fs>>30, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// pickKernel: the one asked for, else the image's default, else the
// default kernel.
func (m *vmManager) pickKernel(ctx context.Context, ref string, im store.Image) (store.Kernel, error) {
	switch {
	case ref != "":
		return m.store.ResolveKernel(ctx, ref)
	case im.DefaultKernelID != "":
		return m.store.GetKernel(ctx, im.DefaultKernelID)
	}
	return m.store.DefaultKernel(ctx)
}

// record inserts the VM row and its guest IP under createVMMu: the name's
// uniqueness and the IP window are the only things it guards.
func (m *vmManager) record(ctx context.Context, vm store.VM, n *vmnet.Network) (store.VM, netip.Addr, error) {
	m.createVMMu.Lock()
	defer m.createVMMu.Unlock()
	allocs, err := m.store.ListIPAllocations(ctx)
	if err != nil {
		return store.VM{}, netip.Addr{}, err
	}
	var taken []netip.Addr
	for _, a := range allocs {
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			taken = append(taken, ip)
		}
	}
	ip, err := n.NextFreeIP(taken)
	if err != nil {
		return store.VM{}, netip.Addr{}, fmt.Errorf("no free guest address: %w", err)
	}
	vm.ID = store.NewID()
	vm.MAC = vmnet.MACFor(vm.ID).String()
	var got store.VM
	err = m.store.WithTx(ctx, func(tx *store.Tx) error {
		var err error
		if got, err = tx.CreateVM(ctx, vm); err != nil {
			return err
		}
		return tx.AllocateIP(ctx, got.ID, ip.String())
	})
	if errdefs.IsAlreadyExists(err) {
		return store.VM{}, netip.Addr{}, fmt.Errorf("a vm named %q exists: choose another --name or remove it: %w", vm.Name, errdefs.ErrAlreadyExists)
	}
	return got, ip, err
}

// boot does the host work of a create; the caller holds vmLocks[vm.ID].
func (m *vmManager) boot(ctx context.Context, vm store.VM, im store.Image, k store.Kernel, ip netip.Addr, n *vmnet.Network, report func(opstate.Progress)) error {
	t0 := time.Now()
	// Record intent before touching the host.
	if _, err := m.store.SetVMState(ctx, vm.ID, store.VMStarting, ""); err != nil {
		return err
	}
	dir := m.layout.VMDir(vm.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	h := &vmHandles{
		VMM:        m.vmm,
		IP:         ip,
		VMMSocket:  m.layout.VMMSocket(vm.ID),
		ConsoleLog: m.layout.VMConsoleLog(vm.ID),
		DiskPath:   m.layout.VMDisk(vm.ID),
	}
	m.handles.put(vm.ID, h)

	report(opstate.Progress{Phase: "disk", Message: "copy-on-write disk from " + im.Name})
	if err := m.makeDisk(ctx, vm.ID, im, h); err != nil {
		return fmt.Errorf("make the disk: %w", err)
	}
	if vm.DiskBytes > im.SizeBytes && h.DiskKind != string(vmdisk.StrategyDMSnap) {
		if err := vmdisk.Grow(ctx, m.runner, h.DiskPath, vm.DiskBytes); err != nil {
			return fmt.Errorf("grow the disk: %w", err)
		}
	}
	if err := m.updateVM(ctx, vm.ID, func(v *store.VM) { v.DiskStrategy = h.DiskKind }); err != nil {
		return err
	}
	crashPoint("create.disk")

	return m.startGuest(ctx, vm, k, n, h, t0, report)
}

// consoleTail returns the last n lines of a console log.
func consoleTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no console log: " + err.Error() + ")"
	}
	if len(data) > 64<<10 {
		data = data[len(data)-64<<10:]
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// updateVM applies change to the VM's current row.
func (m *vmManager) updateVM(ctx context.Context, id string, change func(*store.VM)) error {
	cur, err := m.store.GetVM(ctx, id)
	if err != nil {
		return err
	}
	change(&cur)
	_, err = m.store.UpdateVM(ctx, cur)
	return err
}

// target is how to reach a VM's guest over SSH.
func (m *vmManager) target(h *vmHandles) guest.Target {
	return guest.Target{
		Addr:    netip.AddrPortFrom(h.IP, 22).String(),
		HostKey: h.hostKey,
		Signer:  h.signer,
		Dial:    m.guestDial,
	}
}

// newClientKey makes the daemon's SSH key for one VM, saved 0600 at path,
// and returns it with its public half as base64 of an authorized_keys line
// (the form banger.authkey takes).
func newClientKey(path string) (ssh.Signer, string, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(priv, "banger")
	if err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, "", err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, "", err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	return signer, base64.RawStdEncoding.EncodeToString([]byte(line)), nil
}

// loadClientKey reads a VM's client key back.
func loadClientKey(path string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ssh.ParsePrivateKey(data)
}
