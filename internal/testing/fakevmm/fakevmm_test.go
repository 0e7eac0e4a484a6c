package fakevmm

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/qemu"
	"banger/internal/daemon/vmnet"
	"banger/internal/guest"
	"banger/internal/guestinit"
	"banger/internal/testing/guestboot"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Remove()
	os.Exit(code)
}

const (
	testAddr = "10.213.0.5"
	testTAP  = "fvmmtap0"
)

// env is one VM's surroundings: a namespace of the test's own with a TAP
// in it, the files QEMU opens, the daemon's client key.
type env struct {
	ns     string
	dir    string
	signer ssh.Signer
	cfg    qemu.Config
}

// requireRoot skips unless this host can run the fake: root, ip and
// nsenter.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("skipping: needs root (network namespaces, TAPs)")
	}
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed", tool)
		}
	}
}

// newEnv makes a namespace with a TAP, the kernel, initrd and disk files
// and a qemu.Config that boots VM id through the fake. Everything goes
// when the test ends.
func newEnv(t *testing.T, id string) *env {
	t.Helper()
	requireRoot(t)
	bin := Build(t)
	e := &env{ns: guestboot.NewNetNS(t, "fvmm"), dir: t.TempDir()}
	guestboot.Run(t, "ip", "-n", e.ns, "tuntap", "add", "dev", testTAP, "mode", "tap")
	for _, f := range []string{"vmlinux", "initrd", "root.ext4"} {
		if err := os.WriteFile(filepath.Join(e.dir, f), []byte("fake "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if e.signer, err = ssh.NewSignerFromKey(priv); err != nil {
		t.Fatal(err)
	}
	authKey := base64.RawStdEncoding.EncodeToString(bytes.TrimSpace(ssh.MarshalAuthorizedKey(e.signer.PublicKey())))
	e.cfg = qemu.Config{
		ID:     id,
		Binary: bin,
		Kernel: filepath.Join(e.dir, "vmlinux"),
		Initrd: filepath.Join(e.dir, "initrd"),
		// What the daemon's launchQEMU and guestCmdline write.
		Cmdline: qemu.BaseCmdline() + " root=/dev/vda rw init=/.banger/init banger.ip=" + testAddr + "/24 banger.gw=10.213.0.1" +
			" banger.dns=10.213.0.1 banger.hostname=" + id + " banger.domain=vm.banger banger.authkey=" + authKey,
		Disks:      []qemu.Disk{{Path: filepath.Join(e.dir, "root.ext4")}},
		NICs:       []qemu.NIC{{TAP: testTAP, MAC: "02:00:0a:d5:00:05"}},
		Accel:      qemu.AccelTCG,
		TSCkHz:     2_000_000,
		ConsoleLog: filepath.Join(e.dir, "console.log"),
		QMPSocket:  filepath.Join(e.dir, "qmp.sock"),
		LogFile:    filepath.Join(e.dir, "vmm.log"),
		NetNS:      e.ns,
		PIDFile:    filepath.Join(e.dir, "vmm.pid"),
	}
	return e
}

// start runs the fake through the daemon's qemu.Start; the cleanup kills
// it (by its PID) if the test left it running.
func (e *env) start(t *testing.T) *qemu.Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := qemu.Start(ctx, e.cfg)
	if err != nil {
		t.Fatalf("qemu.Start: %v", err)
	}
	t.Cleanup(func() {
		if !p.Exited() {
			p.Kill()
		}
		<-p.Done()
	})
	return p
}

// waitBoot waits for the host key on the console.
func (e *env) waitBoot(t *testing.T, p *qemu.Process) ssh.PublicKey {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	key, err := guest.WaitForHostKey(ctx, e.cfg.ConsoleLog, p.Done(), 10*time.Millisecond)
	if err != nil {
		con, _ := os.ReadFile(e.cfg.ConsoleLog)
		t.Fatalf("host key: %v\nconsole:\n%s\nVMM output:\n%s", err, con, p.Output())
	}
	return key
}

// dial connects from inside the test's namespace, as the daemon does.
func (e *env) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ns, err := vmnet.OpenNetNS(e.ns)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	var c net.Conn
	var d net.Dialer
	err = ns.Do(func() error {
		var derr error
		c, derr = d.DialContext(ctx, network, addr)
		return derr
	})
	return c, err
}

// exec runs command in the guest over SSH with signer.
func (e *env) exec(t *testing.T, hostKey ssh.PublicKey, signer ssh.Signer, command string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := guest.Dial(ctx, guest.Target{Addr: testAddr + ":22", HostKey: hostKey, Signer: signer, Dial: e.dial})
	if err != nil {
		return "", err
	}
	defer c.Close()
	var out, errOut bytes.Buffer
	s, err := guest.Start(c, guest.Command{Command: command, Stdout: &out, Stderr: &errOut})
	if err != nil {
		return "", err
	}
	code, sig, err := s.Wait()
	if err != nil || code != 0 || sig != "" {
		return out.String(), fmt.Errorf("exit %d signal %q: %v; stderr %q", code, sig, err, errOut.String())
	}
	return out.String(), nil
}

// onLo reports whether the guest's address is on the namespace's lo.
func (e *env) onLo(t *testing.T) bool {
	t.Helper()
	out, err := exec.Command("ip", "-n", e.ns, "-o", "addr", "show", "dev", "lo").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr: %v\n%s", err, out)
	}
	return strings.Contains(string(out), " "+testAddr+"/32 ")
}

func waitExit(t *testing.T, p *qemu.Process) int {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("the fake did not exit; output:\n%s", p.Output())
	}
	code, _ := p.Wait()
	return code
}

func readConsole(t *testing.T, e *env) string {
	t.Helper()
	b, err := os.ReadFile(e.cfg.ConsoleLog)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func procArgv(pid int) []string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func TestBootExecPowerdown(t *testing.T) {
	e := newEnv(t, "vm-boot1")
	p := e.start(t)
	if id, ok := qemu.IDFromArgv(procArgv(p.PID())); !ok || id != e.cfg.ID {
		t.Fatalf("/proc/%d/cmdline: IDFromArgv = %q, %v; want %q", p.PID(), id, ok, e.cfg.ID)
	}
	if pid, err := os.ReadFile(e.cfg.PIDFile); err != nil || strings.TrimSpace(string(pid)) != strconv.Itoa(p.PID()) {
		t.Errorf("pid file: %q, %v; want %d", pid, err, p.PID())
	}
	hostKey := e.waitBoot(t, p)
	line, _, ok := guestboot.WaitLine(e.cfg.ConsoleLog, guestinit.MarkerReady+" ", 5*time.Second, p.Exited)
	if !ok {
		t.Fatalf("no %s line:\n%s", guestinit.MarkerReady, readConsole(t, e))
	}
	t.Logf("console: %s", line)
	if !e.onLo(t) {
		t.Fatalf("%s is not on lo in %s", testAddr, e.ns)
	}

	out, err := e.exec(t, hostKey, e.signer, "echo hi")
	if err != nil || out != "hi\n" {
		t.Fatalf("echo hi: %q, %v", out, err)
	}
	// Only the key on the command line gets in.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(other)
	if _, err := e.exec(t, hostKey, otherSigner, "true"); err == nil {
		t.Fatal("a key not on the command line was accepted")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := p.QMP(ctx, "query-status", nil)
	if err != nil || !strings.Contains(string(st), `"running":true`) {
		t.Fatalf("query-status: %s, %v", st, err)
	}
	var qe *qemu.QMPError
	if _, err := p.QMP(ctx, "no-such-command", nil); !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Fatalf("unknown command: %v; want CommandNotFound", err)
	}
	if _, err := p.QMP(ctx, "system_powerdown", nil); err != nil {
		t.Fatalf("system_powerdown: %v", err)
	}
	if code := waitExit(t, p); code != 0 {
		t.Fatalf("exit %d after system_powerdown; output:\n%s", code, p.Output())
	}
	if e.onLo(t) {
		t.Errorf("%s is still on lo after a clean poweroff", testAddr)
	}
	if !strings.Contains(readConsole(t, e), "\n"+guestinit.MarkerPoweroff+"\n") {
		t.Errorf("no %s on the console:\n%s", guestinit.MarkerPoweroff, readConsole(t, e))
	}
	for _, f := range []string{e.cfg.QMPSocket, e.cfg.PIDFile} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s is still there after a clean exit (%v)", f, err)
		}
	}
}

// TestShutdownCtrlAltDel: the daemon's own stop (qemu.Process.Shutdown
// presses ctrl-alt-delete) ends the guest cleanly.
func TestShutdownCtrlAltDel(t *testing.T) {
	e := newEnv(t, "vm-cad")
	p := e.start(t)
	e.waitBoot(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ended, err := p.Shutdown(ctx, 5*time.Second)
	if err != nil || ended != qemu.EndedByGuest {
		t.Fatalf("Shutdown: %s, %v; want %s", ended, err, qemu.EndedByGuest)
	}
	if code, _ := p.Wait(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if e.onLo(t) {
		t.Errorf("%s is still on lo", testAddr)
	}
}

// TestSIGKILLThenRestart: a killed fake leaves its address on lo and its
// socket file behind; the next start of the VM copes with both.
func TestSIGKILLThenRestart(t *testing.T) {
	e := newEnv(t, "vm-kill")
	p := e.start(t)
	e.waitBoot(t, p)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, p); code != -1 {
		t.Fatalf("exit %d after SIGKILL; want -1", code)
	}
	if !e.onLo(t) {
		t.Errorf("%s left lo after SIGKILL: the fake cannot clean up then", testAddr)
	}
	if _, err := os.Stat(e.cfg.QMPSocket); err != nil {
		t.Errorf("socket file after SIGKILL: %v", err)
	}

	p2 := e.start(t)
	hostKey := e.waitBoot(t, p2)
	if out, err := e.exec(t, hostKey, e.signer, "echo again"); err != nil || out != "again\n" {
		t.Fatalf("echo again: %q, %v", out, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if ended, err := p2.Shutdown(ctx, 5*time.Second); err != nil || ended != qemu.EndedByGuest {
		t.Fatalf("Shutdown: %s, %v", ended, err)
	}
	if e.onLo(t) {
		t.Errorf("%s is still on lo", testAddr)
	}
}

func TestQuitAndSIGTERM(t *testing.T) {
	e := newEnv(t, "vm-quit")
	p := e.start(t)
	e.waitBoot(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := p.QMP(ctx, "quit", nil); err != nil {
		t.Fatalf("quit: %v", err)
	}
	if code := waitExit(t, p); code != 0 {
		t.Fatalf("exit %d after quit", code)
	}
	if e.onLo(t) {
		t.Errorf("%s is still on lo after quit", testAddr)
	}

	p = e.start(t)
	e.waitBoot(t, p)
	if err := syscall.Kill(p.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, p); code != 0 {
		t.Fatalf("exit %d after SIGTERM; output:\n%s", code, p.Output())
	}
	if e.onLo(t) {
		t.Errorf("%s is still on lo after SIGTERM", testAddr)
	}
}

// TestHangKnobs: a guest that ignores ctrl-alt-delete makes Shutdown quit
// QEMU; one whose QEMU ignores quit too makes it kill.
func TestHangKnobs(t *testing.T) {
	e := newEnv(t, "vm-hang")
	t.Setenv(EnvHangPowerdown, "1")
	p := e.start(t)
	e.waitBoot(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if ended, err := p.Shutdown(ctx, 200*time.Millisecond); err != nil || ended != qemu.EndedByQuit {
		t.Fatalf("Shutdown: %s, %v; want %s", ended, err, qemu.EndedByQuit)
	}

	t.Setenv(EnvHangQuit, "1")
	p = e.start(t)
	e.waitBoot(t, p)
	if ended, err := p.Shutdown(ctx, 200*time.Millisecond); err != nil || ended != qemu.EndedByKill {
		t.Fatalf("Shutdown: %s, %v; want %s", ended, err, qemu.EndedByKill)
	}
}

// TestExitAfterAndBootDelay: the boot waits for the delay; the guest then
// powers off by itself.
func TestExitAfterAndBootDelay(t *testing.T) {
	e := newEnv(t, "vm-exitafter")
	t.Setenv(EnvBootDelay, "300ms")
	t.Setenv(EnvExitAfter, "200ms")
	start := time.Now()
	p := e.start(t)
	e.waitBoot(t, p)
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("booted after %v, before the 300ms delay", d)
	}
	if code := waitExit(t, p); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestMissingTAP(t *testing.T) {
	e := newEnv(t, "vm-notap")
	e.cfg.NICs[0].TAP = "fvmmnosuch0"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := qemu.Start(ctx, e.cfg)
	if err == nil {
		p.Kill()
		<-p.Done()
		t.Fatal("started with a TAP that does not exist")
	}
	if !strings.Contains(err.Error(), "fvmmnosuch0") {
		t.Fatalf("error %v does not name the TAP", err)
	}
}

// TestDiskLocked: a second VMM on the same writable disk is refused.
func TestDiskLocked(t *testing.T) {
	e := newEnv(t, "vm-lock")
	p := e.start(t)
	e2 := *e
	e2.cfg.ID = "vm-lock2"
	e2.cfg.QMPSocket = filepath.Join(e.dir, "qmp2.sock")
	e2.cfg.PIDFile = ""
	e2.cfg.ConsoleLog = filepath.Join(e.dir, "console2.log")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p2, err := qemu.Start(ctx, e2.cfg)
	if err == nil {
		p2.Kill()
		<-p2.Done()
		t.Fatal("a second VMM started on a disk the first holds")
	}
	if !strings.Contains(err.Error(), "lock") {
		t.Fatalf("error %v says nothing of the lock", err)
	}
	_ = p
}

// argvFor is the argv qemu.Argv makes for a config like newEnv's, without
// the nsenter wrapper.
func argvFor(t *testing.T, bin string) []string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	argv, err := qemu.Argv(qemu.Config{
		ID: "vm-argv", Binary: bin, Kernel: "/nonexistent/vmlinux",
		Cmdline:    qemu.BaseCmdline() + " banger.ip=10.213.0.9/24 banger.authkey=" + base64.StdEncoding.EncodeToString(ssh.MarshalAuthorizedKey(sshPub)),
		Disks:      []qemu.Disk{{Path: "/nonexistent/root.ext4"}},
		NICs:       []qemu.NIC{{TAP: "tap0", MAC: "02:00:00:00:00:01"}},
		Accel:      qemu.AccelTCG,
		TSCkHz:     1000,
		ConsoleLog: "/nonexistent/console.log",
		QMPSocket:  "/nonexistent/qmp.sock",
	})
	if err != nil {
		t.Fatal(err)
	}
	return argv
}

// runFake runs the binary in this (the host's) namespace: it must refuse
// before it touches anything.
func runFake(t *testing.T, argv []string) (int, string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

func TestArgvRefused(t *testing.T) {
	bin := Build(t)
	base := argvFor(t, bin)
	drop := func(opt string) []string {
		var out []string
		for i := 0; i < len(base); i++ {
			if base[i] == opt {
				i++ // and its value
				continue
			}
			out = append(out, base[i])
		}
		return out
	}
	replace := func(old, new string) []string {
		var out []string
		for _, a := range base {
			if a == old {
				a = new
			}
			out = append(out, a)
		}
		return out
	}
	appendIdx := 0
	for i, a := range base {
		if a == "-append" {
			appendIdx = i + 1
		}
	}
	noIP := append([]string(nil), base...)
	noIP[appendIdx] = strings.Replace(noIP[appendIdx], " banger.ip=10.213.0.9/24", "", 1)
	for _, tc := range []struct {
		name string
		argv []string
		want string
	}{
		{"unknown option", append(append([]string(nil), base...), "-bogus"), "-bogus: invalid option"},
		{"missing argument", append(append([]string(nil), base...), "-initrd"), "-initrd: requires an argument"},
		{"no -append", drop("-append"), "needs -append"},
		{"no banger.ip", noIP, "no banger.ip"},
		{"no -name", drop("-name"), "needs -name"},
		{"foreign name", replace("guest=banger-vm-argv", "guest=other"), "guest=banger-ID"},
		{"unknown device", replace("i8042", "e1000"), "no device"},
		{"repeated option", append(append([]string(nil), base...), "-kernel", "/x"), "-kernel given twice"},
		{"host namespace", base, "refusing to run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runFake(t, tc.argv)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, output %q; want 1 and %q", code, out, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	bin := Build(t)
	code, out := runFake(t, []string{bin, "--version"})
	if code != 0 || !strings.Contains(out, "QEMU emulator version "+Version) {
		t.Fatalf("--version: %d %q", code, out)
	}
	code, out = runFake(t, []string{bin, "-machine", "help"})
	if code != 0 || !strings.Contains(out, "\nmicrovm ") {
		t.Fatalf("-machine help: %d %q", code, out)
	}
}
