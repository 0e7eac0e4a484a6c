package daemon

// Helpers for the VM lifecycle tests (vm_failure_test.go,
// vm_concurrency_test.go). Every name here starts with "vmt".
//
// A vmtEnv is a real daemon (store, locks, disk clones, the VM network
// with real TAPs in a namespace the test owns, DNS registry, handles.json)
// whose VMM is a fake that boots in milliseconds: launchVMM starts a real
// process per VM (sleep, in the test's namespace through nsenter, as the
// QEMU backend does) and, once the "guest" has "booted", serves the real
// guest init SSH server (guestinit.Server) on loopback with a host key it
// announces on the VM's console, authorising the key the daemon put on the
// kernel command line. guestDial reaches that server, so wait-for-SSH and
// exec run the daemon's real code. Each launch follows a vmtPlan, the
// test's way to inject a failure at one phase.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/config"
	"banger/internal/daemon/vmnet"
	"banger/internal/errdefs"
	"banger/internal/guest"
	"banger/internal/guestinit"
	"banger/internal/rpc"
	"banger/internal/store"
)

// vmtMarker is the environment variable naming the VM a fake VMM process
// runs for; vmtPIDs finds the processes by it in /proc.
const vmtMarker = "BANGER_VMT_VM"

// vmtPlan is how one fake boot goes. The zero plan is a healthy guest.
type vmtPlan struct {
	launchErr    error           // the VMM fails to start: no process
	exitEarly    bool            // the process exits before the guest announces a host key
	lifetime     time.Duration   // the guest boots, then powers off by itself (exit 0) after this
	noHostKey    bool            // the guest never announces a host key (the process runs on)
	exitAfterKey bool            // the guest announces its host key, then dies (300 ms on) before serving SSH
	bootDelay    time.Duration   // from launch to the host key on the console
	bootGate     <-chan struct{} // the host key waits for this to close too
	sshErr       error           // guestWaitForSSH fails with it
	shutdownErr  error           // Shutdown fails at once and leaves the guest running
	shutdownHang bool            // Shutdown gives up after grace, the guest still running
	shutdownGate <-chan struct{} // Shutdown waits for this before it powers the guest off
}

// vmtVMM is the fake VMM: the launchVMM, guestDial and guestWaitForSSH
// seams of one daemon.
type vmtVMM struct {
	t      testing.TB
	reaper *guestinit.Reaper
	wg     sync.WaitGroup // boot and wait goroutines

	mu       sync.Mutex
	plan     func(spec bootSpec) vmtPlan // guarded by mu; nil: healthy
	procs    []*vmtProc                  // guarded by mu; every process launched
	launches []vmtLaunch                 // guarded by mu; every launch, failed ones too
	guests   map[string]string           // guarded by mu; guest "IP:22" → its SSH server on loopback
	launched chan string                 // guarded by mu; if set, gets each launched VM's id
}

// vmtLaunch records one launchVMM call.
type vmtLaunch struct {
	vm  string
	at  time.Time
	err error
}

// vmtProc is one fake VMM process.
type vmtProc struct {
	vmm  *vmtVMM
	vm   string // VM id
	spec bootSpec
	addr string // the guest's "IP:22"
	plan vmtPlan
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	code int           // exit code (-1: killed by a signal); set before done closes

	launchedAt time.Time

	shutdowns, kills atomic.Int32

	mu       sync.Mutex
	exited   bool              // guarded by mu
	srv      *guestinit.Server // guarded by mu; the guest's SSH server once booted
	local    string            // guarded by mu; its loopback address
	served   chan error        // guarded by mu; Serve's result
	keyAt    time.Time         // guarded by mu; when the host key was announced
	shutAt   time.Time         // guarded by mu; when Shutdown was first called
	bootFail error             // guarded by mu; why the fake guest could not boot
}

var _ vmProcess = (*vmtProc)(nil)

func newVMTVMM(t testing.TB) *vmtVMM {
	return &vmtVMM{t: t, reaper: guestinit.NewReaper(false, nil), guests: map[string]string{}}
}

// setPlan decides how each following launch goes (nil: healthy).
func (v *vmtVMM) setPlan(plan func(spec bootSpec) vmtPlan) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.plan = plan
}

// planOnce makes the next launch follow p and later ones healthy.
func (v *vmtVMM) planOnce(p vmtPlan) {
	var used atomic.Bool
	v.setPlan(func(bootSpec) vmtPlan {
		if used.CompareAndSwap(false, true) {
			return p
		}
		return vmtPlan{}
	})
}

// planFor applies p to launches of VM id only.
func (v *vmtVMM) planFor(id string, p vmtPlan) {
	v.setPlan(func(spec bootSpec) vmtPlan {
		if spec.ID == id {
			return p
		}
		return vmtPlan{}
	})
}

// notifyLaunches makes each launch send its VM id on the returned channel.
func (v *vmtVMM) notifyLaunches() <-chan string {
	ch := make(chan string, 64)
	v.mu.Lock()
	v.launched = ch
	v.mu.Unlock()
	return ch
}

// launch is the launchVMM seam.
func (v *vmtVMM) launch(ctx context.Context, spec bootSpec) (vmProcess, error) {
	v.mu.Lock()
	plan := vmtPlan{}
	if v.plan != nil {
		plan = v.plan(spec)
	}
	notify := v.launched
	v.mu.Unlock()
	p, err := v.start(spec, plan)
	v.mu.Lock()
	v.launches = append(v.launches, vmtLaunch{vm: spec.ID, at: time.Now(), err: err})
	if p != nil {
		v.procs = append(v.procs, p)
	}
	v.mu.Unlock()
	if notify != nil {
		notify <- spec.ID
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (v *vmtVMM) start(spec bootSpec, plan vmtPlan) (*vmtProc, error) {
	if plan.launchErr != nil {
		return nil, plan.launchErr
	}
	ip, authKey, err := vmtParseCmdline(spec.Cmdline)
	if err != nil {
		return nil, err
	}
	// Both real VMMs truncate the console at start.
	if err := os.WriteFile(spec.ConsoleLog, nil, 0o640); err != nil {
		return nil, err
	}
	life := "3600"
	switch {
	case plan.exitEarly:
		life = "0.05"
	case plan.lifetime > 0:
		life = strconv.FormatFloat(plan.lifetime.Seconds(), 'f', 3, 64)
	}
	// Named as QEMU names its VMs (-name guest=banger-ID) and naming its
	// socket in the VM's directory, so that the daemon's checks of a VMM's
	// command line hold for the fake too.
	argv := []string{"bash", "-c", "exec -a guest=banger-" + spec.ID + ",qmp=" + spec.Socket + " sleep " + life}
	if spec.NetNS != "" {
		argv = append([]string{"nsenter", "--net=" + filepath.Join(vmnet.NetNSDir, spec.NetNS), "--"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), vmtMarker+"="+spec.ID)
	p := &vmtProc{
		vmm: v, vm: spec.ID, spec: spec, addr: netip.AddrPortFrom(ip, 22).String(), plan: plan,
		cmd: cmd, done: make(chan struct{}),
	}
	// Should the test binary die, its fake VMMs die with it (Pdeathsig).
	// The signal comes when the thread that forked the child ends, and Go
	// ends threads that goroutines locked (vmnet's namespace threads), so
	// the child is forked and waited for on a thread locked for its life.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.launchedAt = time.Now()
		started <- nil
		cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		p.powerOff()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("fake vmm: %w", err)
	}
	// A real VMM answers on its socket only once it runs as itself (nsenter
	// has exec'd it): wait likewise for the exec into sleep.
	vmtWaitFor(2*time.Second, func() bool {
		exe, _ := procExe(cmd.Process.Pid)
		return strings.HasSuffix(exe, "/sleep") || p.exitedNow()
	})
	if !plan.exitEarly && !plan.noHostKey {
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			p.boot(spec.ConsoleLog, authKey)
		}()
	}
	return p, nil
}

// vmtParseCmdline reads the guest's address and the daemon's client key
// from the banger.* kernel parameters, as the guest init does.
func vmtParseCmdline(cmdline string) (netip.Addr, ssh.PublicKey, error) {
	var ip netip.Addr
	var key ssh.PublicKey
	for _, f := range strings.Fields(cmdline) {
		k, val, _ := strings.Cut(f, "=")
		switch k {
		case "banger.ip":
			pfx, err := netip.ParsePrefix(val)
			if err != nil {
				return ip, nil, fmt.Errorf("fake vmm: banger.ip: %w", err)
			}
			ip = pfx.Addr()
		case "banger.authkey":
			line, err := base64.RawStdEncoding.DecodeString(val)
			if err != nil {
				return ip, nil, fmt.Errorf("fake vmm: banger.authkey: %w", err)
			}
			if key, _, _, _, err = ssh.ParseAuthorizedKey(line); err != nil {
				return ip, nil, fmt.Errorf("fake vmm: banger.authkey: %w", err)
			}
		}
	}
	if !ip.IsValid() || key == nil {
		return ip, nil, fmt.Errorf("fake vmm: no banger.ip or banger.authkey in %q", cmdline)
	}
	return ip, key, nil
}

// boot is the fake guest: after the plan's delay and gate it serves SSH
// on loopback and announces its host key on the console.
func (p *vmtProc) boot(console string, authKey ssh.PublicKey) {
	if p.plan.bootDelay > 0 {
		select {
		case <-time.After(p.plan.bootDelay):
		case <-p.done:
			return
		}
	}
	if p.plan.bootGate != nil {
		select {
		case <-p.plan.bootGate:
		case <-p.done:
			return
		}
	}
	fail := func(err error) {
		p.mu.Lock()
		p.bootFail = err
		p.mu.Unlock()
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		fail(err)
		return
	}
	host, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		fail(err)
		return
	}
	srv, err := guestinit.NewServer(guestinit.ServerConfig{
		HostKey:        host,
		AuthorizedKeys: []ssh.PublicKey{authKey},
		Reaper:         p.vmm.reaper,
	})
	if err != nil {
		fail(err)
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
		return
	}
	if p.plan.exitAfterKey {
		l.Close()
		vmtAnnounce(console, p.vm, host.PublicKey())
		// Long enough for the daemon (polling every 50 ms) to read the key.
		select {
		case <-time.After(300 * time.Millisecond):
		case <-p.done:
		}
		p.cmd.Process.Kill()
		return
	}
	p.mu.Lock()
	if p.exited {
		p.mu.Unlock()
		l.Close()
		return
	}
	p.srv, p.served, p.local = srv, make(chan error, 1), l.Addr().String()
	served := p.served
	p.mu.Unlock()
	p.vmm.wg.Add(1)
	go func() {
		defer p.vmm.wg.Done()
		served <- srv.Serve(l)
	}()
	p.vmm.mu.Lock()
	p.vmm.guests[p.addr] = l.Addr().String()
	p.vmm.mu.Unlock()

	if err := vmtAnnounce(console, p.vm, host.PublicKey()); err != nil {
		fail(err)
		return
	}
	p.mu.Lock()
	p.keyAt = time.Now()
	p.mu.Unlock()
}

// vmtAnnounce writes the host key line to the console, as the guest init
// does.
func vmtAnnounce(console, vm string, key ssh.PublicKey) error {
	f, err := os.OpenFile(console, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "[    0.100000] fake guest for %s\n%s%s\n", vm, guest.HostKeyMarker, bytes.TrimSpace(ssh.MarshalAuthorizedKey(key)))
	return errors.Join(err, f.Close())
}

// powerOff ends the guest's SSH server once the process has exited.
func (p *vmtProc) powerOff() {
	p.mu.Lock()
	p.exited = true
	srv, served, local := p.srv, p.served, p.local
	p.mu.Unlock()
	if srv == nil {
		return
	}
	p.vmm.mu.Lock()
	if p.vmm.guests[p.addr] == local {
		delete(p.vmm.guests, p.addr)
	}
	p.vmm.mu.Unlock()
	srv.Close()
	if err := <-served; err != nil {
		p.vmm.t.Errorf("fake guest %s: Serve: %v", p.vm, err)
	}
}

func (p *vmtProc) PID() int              { return p.cmd.Process.Pid }
func (p *vmtProc) Done() <-chan struct{} { return p.done }

// Wait is the VMM's exit status once it has exited (the exit watcher's
// waitCode).
func (p *vmtProc) Wait() (int, error) {
	<-p.done
	return p.code, nil
}

// Shutdown asks the guest to power off and waits up to grace, as the real
// backends' ctrl-alt-delete does; the plan can make it fail or hang.
func (p *vmtProc) Shutdown(ctx context.Context, grace time.Duration) error {
	p.shutdowns.Add(1)
	p.mu.Lock()
	if p.shutAt.IsZero() {
		p.shutAt = time.Now()
	}
	p.mu.Unlock()
	select {
	case <-p.done:
		return nil // as QEMU's: it had ended before
	default:
	}
	if p.plan.shutdownErr != nil {
		return p.plan.shutdownErr
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	if p.plan.shutdownHang {
		select {
		case <-p.done:
			return nil
		case <-timer.C:
		case <-ctx.Done():
		}
		return fmt.Errorf("fake vmm: the guest did not power off within %s", grace)
	}
	if p.plan.shutdownGate != nil {
		select {
		case <-p.plan.shutdownGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-timer.C:
		// A zero grace still lets SIGTERM land.
		select {
		case <-p.done:
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	case <-ctx.Done():
	}
	return fmt.Errorf("fake vmm: the guest did not power off within %s", grace)
}

func (p *vmtProc) Kill() error {
	p.kills.Add(1)
	select {
	case <-p.done:
		return nil
	default:
	}
	return p.cmd.Process.Kill()
}

func (p *vmtProc) exitedNow() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *vmtProc) times() (launched, key, shut time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.launchedAt, p.keyAt, p.shutAt
}

// dial is the guestDial seam: the guest at addr is its SSH server on
// loopback, while it runs.
func (v *vmtVMM) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	v.mu.Lock()
	local, ok := v.guests[addr]
	v.mu.Unlock()
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, local)
}

// waitForSSH is the guestWaitForSSH seam: the plan's failure, else the
// real wait through dial.
func (v *vmtVMM) waitForSSH(ctx context.Context, t guest.Target) (*ssh.Client, error) {
	if p := v.latest(func(p *vmtProc) bool { return p.addr == t.Addr }); p != nil && p.plan.sshErr != nil {
		return nil, p.plan.sshErr
	}
	return guest.WaitForSSH(ctx, t, 20*time.Millisecond)
}

// latest is the most recently launched process that match accepts.
func (v *vmtVMM) latest(match func(*vmtProc) bool) *vmtProc {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := len(v.procs) - 1; i >= 0; i-- {
		if match(v.procs[i]) {
			return v.procs[i]
		}
	}
	return nil
}

// procsOf is every process launched for VM id, oldest first.
func (v *vmtVMM) procsOf(id string) []*vmtProc {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []*vmtProc
	for _, p := range v.procs {
		if p.vm == id {
			out = append(out, p)
		}
	}
	return out
}

func (v *vmtVMM) launchesOf(id string) []vmtLaunch {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []vmtLaunch
	for _, l := range v.launches {
		if l.vm == id {
			out = append(out, l)
		}
	}
	return out
}

// close kills what is still running and waits for every goroutine.
func (v *vmtVMM) close() {
	v.mu.Lock()
	procs := slices.Clone(v.procs)
	v.mu.Unlock()
	for _, p := range procs {
		p.cmd.Process.Kill()
	}
	v.wg.Wait()
	v.reaper.Close()
	for _, p := range procs {
		p.mu.Lock()
		if p.bootFail != nil {
			v.t.Errorf("fake guest %s could not boot: %v", p.vm, p.bootFail)
		}
		p.mu.Unlock()
	}
}

// vmtLog is the daemon's log, kept for assertions.
type vmtLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *vmtLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the log lines containing every one of subs.
func (l *vmtLog) lines(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for line := range strings.Lines(l.buf.String()) {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

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
