package daemon

// The vmtEnv half of the VM lifecycle tests' helpers (the fake VMM is in
// vmtest_vmm_test.go): a real daemon on the fake VMM, and the
// assertions on what the store and the host hold for a VM.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/daemon/vmnet"
	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/store"
)

// vmtEnv is a daemon with the fake VMM, its VM network in a namespace of
// the test's own, a kernel and a ready image.
type vmtEnv struct {
	t     testing.TB
	cfg   config.Config
	netns string
	d     *Daemon
	c     *rpc.Client
	log   *vmtLog
	vmm   *vmtVMM
	image store.Image
	r     *running
}

// vmtSetup starts the daemon. It needs root: the VM network makes a
// namespace, a bridge, TAPs and nftables rules (in its own namespace
// only), and the daemon chowns its socket.
func vmtSetup(t testing.TB, mod func(*config.Config)) *vmtEnv {
	t.Helper()
	needRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun for the VMs' TAP devices: %v", err)
	}
	for _, tool := range []string{"nsenter", "sleep", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (the fake VMM runs sleep in the namespace with nsenter; the test lists TAPs with ip): %v", tool, err)
		}
	}
	cfg := testConfig(t)
	var b [4]byte
	rand.Read(b[:])
	e := &vmtEnv{t: t, netns: "bgt-" + hex.EncodeToString(b[:]), log: &vmtLog{}}
	// Registered first, so it runs last: after the daemon has stopped and
	// every fake VMM is gone.
	t.Cleanup(func() {
		if err := vmnet.DeleteNetNS(e.netns); err != nil && !errors.Is(err, vmnet.ErrNetNSNotFound) {
			t.Errorf("delete netns %s: %v", e.netns, err)
		}
	})
	cfg.NetNS = e.netns
	cfg.DNSUpstreams = []string{"127.0.0.1:53"}
	cfg.VMM = "qemu" // the fake stands in for it; no host probing
	cfg.Disk = "copy"
	cfg.TAPPoolSize = 2
	cfg.BootTimeout = config.Duration(10 * time.Second)
	// The reconciler's passes take VM locks; tests that want it say so.
	cfg.ReconcileInterval = config.Duration(time.Hour)
	if mod != nil {
		mod(&cfg)
	}
	e.cfg = cfg

	logger := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := Open(context.Background(), Options{Config: cfg, Logger: logger})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	e.d = d
	e.vmm = newVMTVMM(t)
	t.Cleanup(e.vmm.close) // after the daemon has stopped (cleanups run last-in first-out)
	d.vms.launchVMM = e.vmm.launch
	d.vms.guestDial = e.vmm.dial
	d.vms.guestWaitForSSH = e.vmm.waitForSSH
	e.serve(t)
	e.image = e.addImage(t)
	return e
}

// serve runs e.d and connects a client to it.
func (e *vmtEnv) serve(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{d: e.d, cfg: e.cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- e.d.Serve(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	e.r = r
	e.c = dialDaemon(t, e.cfg)
}

// restartDaemon stops the daemon as `systemctl restart` would (the fake
// VMMs, which outlive it, keep running) and opens a new one on the same
// root, with the same seams.
func (e *vmtEnv) restartDaemon(t testing.TB) {
	t.Helper()
	e.c.Close()
	e.r.stop(t)
	logger := slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := Open(context.Background(), Options{Config: e.cfg, Logger: logger})
	if err != nil {
		t.Fatalf("Open after restart: %v", err)
	}
	e.d = d
	d.vms.launchVMM = e.vmm.launch
	d.vms.guestDial = e.vmm.dial
	d.vms.guestWaitForSSH = e.vmm.waitForSSH
	e.serve(t)
}

// addImage records a kernel and a ready 8 MiB image (a sparse file: the
// fake guest never reads it, the daemon clones it).
func (e *vmtEnv) addImage(t testing.TB) store.Image {
	t.Helper()
	ctx := context.Background()
	s, l := e.d.store, e.d.layout
	k, err := s.CreateKernel(ctx, store.Kernel{Name: "vmt-kernel", Version: "6.1.0-test", Source: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.KernelDir(k.ID), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.KernelImage(k.ID), []byte("not a kernel: the fake VMM never reads it"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := store.NewID()
	if err := os.MkdirAll(l.ImageDir(id), 0o755); err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	f, err := os.Create(l.ImageRootfs(id))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("fake ext4")
	f.Truncate(size)
	f.Close()
	im, err := s.CreateImage(ctx, store.Image{
		ID: id, Name: "vmt-image", State: store.ImageReady, SourceKind: store.SourceRegister,
		SourceRef: "test", SizeBytes: size, DefaultKernelID: k.ID,
	})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// ctx bounds one call so that a hang fails the test instead of stalling it.
func (e *vmtEnv) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// startOp calls method (which starts an op) and follows the op to its end.
// A call error is returned as is.
func (e *vmtEnv) startOp(method string, params any) (rpc.VMStarted, rpc.Op, error) {
	ctx := e.ctx()
	var started rpc.VMStarted
	if err := e.c.Call(ctx, method, params, &started); err != nil {
		return started, rpc.Op{}, err
	}
	final, err := e.c.WatchOp(ctx, started.OpID, nil)
	if err != nil {
		return started, final, fmt.Errorf("watch %s op %s: %w", method, started.OpID, err)
	}
	return started, final, nil
}

// create runs vm.create for name; the op may fail.
func (e *vmtEnv) create(name string) (rpc.VMStarted, rpc.Op, error) {
	return e.createFrom(name, e.image.Name)
}

func (e *vmtEnv) createFrom(name, image string) (rpc.VMStarted, rpc.Op, error) {
	return e.startOp(rpc.MethodVMCreate, rpc.VMCreateParams{Name: name, Image: image, VCPUs: 1, MemoryMiB: 128})
}

// mustCreate creates a running VM.
func (e *vmtEnv) mustCreate(t testing.TB, name string) rpc.VM {
	t.Helper()
	return e.mustCreateFrom(t, name, e.image.Name)
}

func (e *vmtEnv) mustCreateFrom(t testing.TB, name, image string) rpc.VM {
	t.Helper()
	started, final, err := e.createFrom(name, image)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if final.State != "succeeded" {
		t.Fatalf("create %s: op %s: %s", name, final.State, final.Error)
	}
	var vm rpc.VM
	if err := json.Unmarshal(final.Result, &vm); err != nil || vm.ID != started.VM.ID || vm.State != "running" {
		t.Fatalf("create %s: result %s (%v), want the VM running", name, final.Result, err)
	}
	return vm
}

func (e *vmtEnv) start(ref string) (rpc.Op, error) {
	_, final, err := e.startOp(rpc.MethodVMStart, rpc.NameRef{Ref: ref})
	return final, err
}

func (e *vmtEnv) restart(ref string, timeout int) (rpc.Op, error) {
	_, final, err := e.startOp(rpc.MethodVMRestart, rpc.VMStopParams{Ref: ref, TimeoutSeconds: timeout})
	return final, err
}

func (e *vmtEnv) mustStart(t testing.TB, ref string) {
	t.Helper()
	final, err := e.start(ref)
	if err != nil || final.State != "succeeded" {
		t.Fatalf("start %s: %v; op %s: %s", ref, err, final.State, final.Error)
	}
}

func (e *vmtEnv) stop(ref string, timeout int) (rpc.VM, error) {
	var vm rpc.VM
	err := e.c.Call(e.ctx(), rpc.MethodVMStop, rpc.VMStopParams{Ref: ref, TimeoutSeconds: timeout}, &vm)
	return vm, err
}

func (e *vmtEnv) mustStop(t testing.TB, ref string) {
	t.Helper()
	if vm, err := e.stop(ref, 1); err != nil || vm.State != "stopped" {
		t.Fatalf("stop %s = %+v, %v", ref, vm, err)
	}
}

func (e *vmtEnv) rm(ref string, force bool) error {
	return e.c.Call(e.ctx(), rpc.MethodVMRemove, rpc.VMRemoveParams{Ref: ref, Force: force}, nil)
}

// exec runs argv in the VM and returns its stdout and exit code.
func (e *vmtEnv) exec(ref string, argv ...string) (string, int, error) {
	var out bytes.Buffer
	var res rpc.VMExecResult
	err := e.c.Stream(e.ctx(), rpc.MethodVMExec, rpc.VMExecParams{VM: ref, Argv: argv}, func(ev rpc.StreamEvent) error {
		if ev.Kind == rpc.EventStdout {
			var b []byte
			if err := json.Unmarshal(ev.Data, &b); err != nil {
				return err
			}
			out.Write(b)
		}
		return nil
	}, &res)
	return out.String(), res.ExitCode, err
}

// row is the VM's store row; ok is false when there is none.
func (e *vmtEnv) row(t testing.TB, id string) (store.VM, bool) {
	t.Helper()
	vm, err := e.d.store.GetVM(context.Background(), id)
	if errdefs.IsNotFound(err) {
		return vm, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return vm, true
}

// network is the daemon's VM network (nil before the first create).
func (e *vmtEnv) network() *vmnet.Network {
	e.d.vms.netMu.Lock()
	defer e.d.vms.netMu.Unlock()
	return e.d.vms.net
}

// dnsLookup is the DNS registry's address for name.
func (e *vmtEnv) dnsLookup(name string) (netip.Addr, bool) {
	n := e.network()
	if n == nil {
		return netip.Addr{}, false
	}
	return n.DNS().Lookup(name)
}

// vmTAPs lists the VMs' TAPs (not the pool's idle ones) in the test's
// namespace, as `ip -n NS -o link` shows them.
func (e *vmtEnv) vmTAPs(t testing.TB) []string {
	t.Helper()
	out, err := exec.Command("ip", "-n", e.netns, "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s -o link show: %v\n%s", e.netns, err, out)
	}
	var taps []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		if _, ok := vmnet.VMIDPrefix(name); ok {
			taps = append(taps, name)
		}
	}
	sort.Strings(taps)
	return taps
}

func (e *vmtEnv) hasTAP(t testing.TB, id string) bool {
	t.Helper()
	name, err := vmnet.TAPName(id)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(e.vmTAPs(t), name)
}

// vmtPIDs lists the live processes running for VM id (marked in their
// environment), found in /proc rather than in the fake's records.
func vmtPIDs(id string) []int {
	ents, _ := os.ReadDir("/proc")
	want := []byte(vmtMarker + "=" + id + "\x00")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + ent.Name() + "/environ")
		if err != nil {
			continue // gone, or a zombie
		}
		if bytes.Contains(env, want) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ipOf is the VM's guest IP allocation, if it has one.
func (e *vmtEnv) ipOf(t testing.TB, id string) (string, bool) {
	t.Helper()
	allocs, err := e.d.store.ListIPAllocations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs {
		if a.VMID == id {
			return a.IP, true
		}
	}
	return "", false
}

// assertNoHostTrace: no VMM process, no TAP, no DNS name, and every fake
// process launched for the VM has exited.
func (e *vmtEnv) assertNoHostTrace(t testing.TB, id, name string) {
	t.Helper()
	if pids := vmtPIDs(id); len(pids) != 0 {
		t.Errorf("vm %s: VMM processes %v still run", name, pids)
	}
	for _, p := range e.vmm.procsOf(id) {
		if !p.exitedNow() {
			t.Errorf("vm %s: fake VMM pid %d has not exited", name, p.PID())
		}
	}
	if e.hasTAP(t, id) {
		t.Errorf("vm %s: its TAP is still in netns %s: %v", name, e.netns, e.vmTAPs(t))
	}
	if ip, ok := e.dnsLookup(name); ok {
		t.Errorf("vm %s: still in DNS as %s", name, ip)
	}
}

// assertGone: a VM whose create failed, or that was removed, left
// nothing: no host trace, no row, no IP, no directory, no cached handles,
// no lock entry.
func (e *vmtEnv) assertGone(t testing.TB, id, name string) {
	t.Helper()
	e.assertNoHostTrace(t, id, name)
	if vm, ok := e.row(t, id); ok {
		t.Errorf("vm %s: its row is still in the store: %+v", name, vm)
	}
	if vm, err := e.d.store.GetVMByName(context.Background(), name); !errdefs.IsNotFound(err) {
		t.Errorf("vm %s: a row of that name is in the store: %+v (%v)", name, vm, err)
	}
	if ip, ok := e.ipOf(t, id); ok {
		t.Errorf("vm %s: IP %s is still allocated to it", name, ip)
	}
	if _, err := os.Lstat(e.d.layout.VMDir(id)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("vm %s: %s exists (%v), want it gone", name, e.d.layout.VMDir(id), err)
	}
	if ip, _, ok := e.d.vms.handles.view(id); ok {
		t.Errorf("vm %s: handles (IP %s) still cached", name, ip)
	}
}

// assertDown: a VM that exists but does not run (stopped, or in error
// after a failed start) holds its disk and IP and nothing else.
func (e *vmtEnv) assertDown(t testing.TB, id, name string, state store.VMState, reason string) {
	t.Helper()
	e.assertNoHostTrace(t, id, name)
	vm, ok := e.row(t, id)
	if !ok {
		t.Fatalf("vm %s: no row, want it kept (%s)", name, state)
	}
	if vm.State != state || !strings.Contains(vm.StateReason, reason) {
		t.Errorf("vm %s: state %s (%q), want %s with a reason containing %q", name, vm.State, vm.StateReason, state, reason)
	}
	if _, ok := e.ipOf(t, id); !ok {
		t.Errorf("vm %s: lost its IP allocation", name)
	}
	if fi, err := os.Stat(e.d.layout.VMDisk(id)); err != nil || fi.Size() != e.image.SizeBytes {
		t.Errorf("vm %s: disk: %v, %v; want it kept", name, fi, err)
	}
	h, ok := e.handles(t, id)
	if !ok {
		t.Fatalf("vm %s: no cached handles", name)
	}
	if h.proc != nil || h.TAP != "" || h.PID != 0 {
		t.Errorf("vm %s: handles still hold a VMM or TAP: proc %v, pid %d, tap %q", name, h.proc, h.PID, h.TAP)
	}
	var onDisk vmHandles
	if data, err := os.ReadFile(e.d.layout.VMHandles(id)); err != nil {
		t.Errorf("vm %s: handles.json: %v", name, err)
	} else if err := json.Unmarshal(data, &onDisk); err != nil || onDisk.PID != 0 || onDisk.TAP != "" {
		t.Errorf("vm %s: handles.json = %s (%v), want no pid and no tap", name, data, err)
	}
}

// handles copies the VM's cached handles, read under its lock as the
// daemon reads them.
func (e *vmtEnv) handles(t testing.TB, id string) (vmHandles, bool) {
	t.Helper()
	unlock, err := e.d.vms.locks.Lock(e.ctx(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	h, ok := e.d.vms.handles.get(id)
	if !ok {
		return vmHandles{}, false
	}
	return *h, true
}

// assertRunning: the VM's row says running, its one live VMM process is
// the one its handles name, and its TAP and DNS name are there.
func (e *vmtEnv) assertRunning(t testing.TB, id, name string) {
	t.Helper()
	vm, ok := e.row(t, id)
	if !ok || vm.State != store.VMRunning {
		t.Fatalf("vm %s: row %+v (found %v), want running", name, vm, ok)
	}
	h, ok := e.handles(t, id)
	if !ok {
		t.Fatalf("vm %s: no cached handles", name)
	}
	if pids := vmtPIDs(id); len(pids) != 1 || pids[0] != h.PID || h.proc == nil {
		t.Errorf("vm %s: live VMM processes %v, handles name pid %d (proc %v)", name, pids, h.PID, h.proc)
	}
	if !e.hasTAP(t, id) || h.TAP == "" {
		t.Errorf("vm %s: handles' TAP %q; TAPs in netns %s: %v", name, h.TAP, e.netns, e.vmTAPs(t))
	}
	ip, _ := e.ipOf(t, id)
	if got, ok := e.dnsLookup(name); !ok || got.String() != ip {
		t.Errorf("vm %s: DNS says %v (%v), want its IP %s", name, got, ok, ip)
	}
}

// assertOpFailed: the op failed, in memory and in the store, with an error
// naming the VM and containing want.
func (e *vmtEnv) assertOpFailed(t testing.TB, final rpc.Op, name, want string) {
	t.Helper()
	if final.State != "failed" || !strings.Contains(final.Error, name) || !strings.Contains(final.Error, want) {
		t.Errorf("op %s on %s: %s %q; want failed naming the VM and saying %q", final.Kind, name, final.State, final.Error, want)
	}
	row, err := e.d.store.GetOperation(context.Background(), final.ID)
	if err != nil || row.State != store.OpFailed || row.Error != final.Error {
		t.Errorf("op %s in the store: %+v, %v; want failed with the same error", final.ID, row, err)
	}
}

// vmtWaitFor polls cond for up to d.
func vmtWaitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
