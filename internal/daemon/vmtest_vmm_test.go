package daemon

// Helpers for the VM lifecycle tests (vm_failure_test.go,
// vm_concurrency_test.go and others): the fake VMM here, the vmtEnv and
// its assertions in vmtest_env_test.go. Every name starts with "vmt".
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
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/vmnet"
	"banger/internal/guest"
	"banger/internal/guestinit"
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
