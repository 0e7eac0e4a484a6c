package guestinit

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

const pid1SetupEnv = "GUESTINIT_PID1_SETUP"

// TestInitAsPID1 boots the init for real, as PID 1 of new PID, mount,
// network, UTS and IPC namespaces, chrooted into a tmpfs that holds the
// test binary as /.banger/init and the host's /usr read-only (so there is a
// shell). The kernel command line is a file bound over /proc/cmdline, the
// NIC a dummy eth0, the console a FIFO bound over /dev/console. The test
// talks SSH to it from inside that network namespace (the guest's own
// address, so only its loopback carries traffic), then powers it off:
// reboot(2) in a child PID namespace ends the namespace, not the machine.
func TestInitAsPID1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: namespaces, mounts, chroot")
	}
	if testing.Short() {
		t.Skip("boots the init in namespaces; not in -short")
	}
	dir := t.TempDir()
	client := newSigner(t)
	authkey := base64.RawURLEncoding.EncodeToString(ssh.MarshalAuthorizedKey(client.PublicKey()))
	cmdline := "console=ttyS0 root=/dev/vda init=/.banger/init banger.ip=10.99.0.2/24 banger.gw=10.99.0.1 " +
		"banger.dns=10.99.0.1,10.99.0.3 banger.hostname=pid1test banger.domain=vm.test banger.mtu=1400 " +
		"banger.authkey=" + authkey + " banger.entrypoint=1 banger.debug=1 banger.bogus=1\n"
	writeTestFile(t, filepath.Join(dir, "cmdline"), cmdline)
	if err := unix.Mkfifo(filepath.Join(dir, "console"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo, err := os.OpenFile(filepath.Join(dir, "console"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var console syncBuffer
	copied := make(chan struct{})
	go func() { defer close(copied); io.Copy(&console, fifo) }()
	defer func() {
		fifo.Close()
		<-copied
		t.Logf("guest console:\n%s", console.String())
	}()

	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{pid1SetupEnv + "=" + dir}
	var setupOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &setupOut, &setupOut
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
	}
	// Pdeathsig fires when the thread that started the child ends, and Go
	// ends threads (dialInNetns's, for one): start it from a thread held
	// for the whole test.
	started, release := make(chan error), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			<-release
		}
	}()
	if err := <-started; err != nil {
		t.Skipf("cannot create namespaces here: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		close(release)
		if setupOut.Len() > 0 {
			t.Logf("setup output:\n%s", setupOut.String())
		}
	}()

	hostKeyLine := waitConsole(t, &console, exited, regexp.MustCompile(MarkerHostKey+` (ssh-ed25519 \S+)`))
	ready := waitConsole(t, &console, exited, regexp.MustCompile(MarkerReady+` (\d+)`))
	t.Logf("init: exec to SSH listening: %s ms (as PID 1 in namespaces, with -race if set)", ready)
	hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hostKeyLine))
	if err != nil {
		t.Fatal(err)
	}

	conn, err := dialInNetns(cmd.Process.Pid, "10.99.0.2:22")
	if err != nil {
		t.Fatal(err)
	}
	sc, chans, reqs, err := ssh.NewClientConn(conn, "10.99.0.2:22", &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(client)},
		HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := ssh.NewClient(sc, chans, reqs)
	defer c.Close()

	sh := func(script string) result { return run(t, c, EncodeArgv([]string{"/bin/sh", "-c", script}), "") }

	if got := sh("echo $PPID; hostname; cat /sys/class/net/eth0/mtu"); got != (result{stdout: "1\npid1test\n1400\n"}) {
		t.Errorf("parent, hostname, MTU: %+v", got)
	}
	if got := sh("grep -c '^eth0	00000000	0100630A' /proc/net/route"); got.stdout != "1\n" {
		t.Errorf("default route via 10.99.0.1 missing: %+v (%s)", got, sh("cat /proc/net/route").stdout)
	}
	etc := untarString(t, run(t, c, EncodeArgv([]string{InitPath, "tar", "/etc", "hostname", "hosts", "resolv.conf"}), ""))
	if etc["hostname"] != "pid1test\n" || !strings.Contains(etc["hosts"], "127.0.1.1\tpid1test.vm.test pid1test\n") ||
		!strings.Contains(etc["resolv.conf"], "nameserver 10.99.0.1\nnameserver 10.99.0.3\nsearch vm.test\n") {
		t.Errorf("/etc files: %q", etc)
	}
	mounts := sh("cat /proc/self/mountinfo").stdout
	for _, want := range []string{" /sys rw", " /dev/pts rw", " /dev/shm rw", " /run rw", " - devpts devpts rw", "ptmxmode=666"} {
		if !strings.Contains(mounts, want) {
			t.Errorf("mountinfo lacks %q:\n%s", want, mounts)
		}
	}
	if got := sh("readlink /dev/ptmx /dev/fd"); got.stdout != "pts/ptmx\n/proc/self/fd\n" {
		t.Errorf("/dev links: %+v", got)
	}
	waitConsole(t, &console, exited, regexp.MustCompile(`entrypoint ended; the VM stays up" pid=\d+ (status="exit status 0")`))
	if got := sh("test -d /entrypoint-ran && echo yes"); got.stdout != "yes\n" {
		t.Errorf("the entrypoint did not run: %+v", got)
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Output("tty"); err != nil || string(out) != "/dev/pts/0\r\n" {
		t.Errorf("pty: %q %v", out, err)
	}

	// Orphans are reaped by PID 1.
	if got := sh("sleep 0.2 & sleep 0.2 & echo started"); got.stdout != "started\n" {
		t.Errorf("orphans: %+v", got)
	}
	time.Sleep(600 * time.Millisecond)
	if got := sh(`for f in /proc/[0-9]*/stat; do read -r l < $f && case "$l" in *") Z "*) echo "$l";; esac; done`); got.stdout != "" {
		t.Errorf("zombies left:\n%s", got.stdout)
	}

	// A long-running session is ended by the poweroff, which replies first.
	long, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	longDone := make(chan error, 1)
	if err := long.Start(EncodeArgv([]string{"sleep", "100"})); err != nil {
		t.Fatal(err)
	}
	go func() { longDone <- long.Wait() }()
	if got := run(t, c, EncodeArgv([]string{InitPath, "poweroff"}), ""); got != (result{}) {
		t.Errorf("poweroff: %+v", got)
	}
	select {
	case err := <-longDone:
		var ee *ssh.ExitError
		if !errors.As(err, &ee) || ee.Signal() != "TERM" {
			t.Errorf("long session: %v, want exit-signal TERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the long session never ended")
	}
	c.Close()
	select {
	case err := <-exited:
		t.Logf("namespace init ended: %v", err)
		exited <- err
	case <-time.After(20 * time.Second):
		t.Fatal("the init did not power off")
	}
	waitConsole(t, &console, nil, regexp.MustCompile(`(`+MarkerPoweroff+`)`))
	if strings.Contains(console.String(), "level=ERROR") {
		t.Errorf("errors on the console")
	}
	if !strings.Contains(console.String(), "banger.bogus: unknown parameter") {
		t.Errorf("the unknown parameter was not logged")
	}
}

// waitConsole waits for re on the console and returns its first group.
func waitConsole(t *testing.T, console *syncBuffer, exited chan error, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if m := re.FindStringSubmatch(console.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("the init ended (%v) before %q showed", err, re)
		case <-deadline:
			t.Fatalf("%q never showed on the console", re)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dialInNetns connects to addr from inside pid's network namespace.
func dialInNetns(pid int, addr string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- res{nil, err}
			return // the thread stays locked and ends with this goroutine
		}
		defer orig.Close()
		ns, err := netns.GetFromPid(pid)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			ch <- res{nil, err}
			return
		}
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		ch <- res{c, err}
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread() // else the thread, in the wrong namespace, ends with us
		}
	}()
	r := <-ch
	return r.c, r.err
}

func untarString(t *testing.T, r result) map[string]string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("tar: %+v", r)
	}
	out := map[string]string{}
	tr := tar.NewReader(strings.NewReader(r.stdout))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[hdr.Name] = string(b)
	}
}

// pid1Setup runs as PID 1 of the namespaces TestInitAsPID1 made: it builds
// the guest root and execs the init in it. Nothing here touches the host:
// mounts are private to the new mount namespace, /usr is bound read-only.
func pid1Setup(dir string) {
	var once sync.Once
	fail := func(what string, err error) {
		once.Do(func() { fmt.Fprintf(os.Stderr, "pid1 setup: %s: %v\n", what, err) })
		os.Exit(1)
	}
	if os.Getpid() != 1 {
		fail("check", errors.New("not PID 1 of a new PID namespace"))
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fail("making mounts private", err)
	}
	root := filepath.Join(dir, "root")
	mkdir := func(p string, mode os.FileMode) {
		if err := os.MkdirAll(p, mode); err != nil {
			fail("mkdir", err)
		}
	}
	mount := func(src, dst, fstype string, flags uintptr, data string) {
		if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
			fail("mount "+dst, err)
		}
	}
	mkdir(root, 0o755)
	mount("tmpfs", root, "tmpfs", 0, "mode=0755")
	for _, d := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr"} {
		fi, err := os.Lstat("/" + d)
		switch {
		case err != nil:
			continue
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink("/" + d)
			if err := os.Symlink(target, filepath.Join(root, d)); err != nil {
				fail("symlink", err)
			}
		case fi.IsDir():
			mkdir(filepath.Join(root, d), 0o755)
			mount("/"+d, filepath.Join(root, d), "", unix.MS_BIND|unix.MS_REC, "")
			mount("", filepath.Join(root, d), "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
		}
	}
	write := func(p, content string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(root, p), []byte(content), mode); err != nil {
			fail("write "+p, err)
		}
	}
	mkdir(filepath.Join(root, "etc"), 0o755)
	for _, f := range []string{"passwd", "group"} {
		data, _ := os.ReadFile("/etc/" + f)
		write("etc/"+f, string(data), 0o644)
	}
	for _, f := range []string{"hostname", "hosts", "resolv.conf"} {
		write("etc/"+f, "", 0o644)
	}
	mkdir(filepath.Join(root, ".banger"), 0o755)
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		fail("reading the test binary", err)
	}
	write(".banger/init", string(self), 0o755)
	write(".banger/image.json", `{"entrypoint":["/.banger/init","untar"],"cmd":["/entrypoint-ran"],"env":["FOO=bar"]}`, 0o644)
	mkdir(filepath.Join(root, "tmp"), 0o1777)
	mkdir(filepath.Join(root, "root"), 0o700)
	// /proc with the fake command line; /dev with the console FIFO.
	mkdir(filepath.Join(root, "proc"), 0o555)
	mount("proc", filepath.Join(root, "proc"), "proc", 0, "")
	mount(filepath.Join(dir, "cmdline"), filepath.Join(root, "proc/cmdline"), "", unix.MS_BIND, "")
	mkdir(filepath.Join(root, "dev"), 0o755)
	mount("tmpfs", filepath.Join(root, "dev"), "tmpfs", unix.MS_NOSUID, "mode=0755")
	for name, dev := range map[string]int{"null": 3, "zero": 5, "urandom": 9} {
		if err := unix.Mknod(filepath.Join(root, "dev", name), unix.S_IFCHR|0o666, int(unix.Mkdev(1, uint32(dev)))); err != nil {
			fail("mknod", err)
		}
	}
	write("dev/console", "", 0o600)
	mount(filepath.Join(dir, "console"), filepath.Join(root, "dev/console"), "", unix.MS_BIND, "")
	// The NIC: one end of a veth pair, both ends in this namespace. The
	// kernel registers the peer first, so eth0 gets the lower index and is
	// the "first" NIC, as the only one is in a guest.
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "peer0"}, PeerName: "eth0"}); err != nil {
		fail("adding eth0", err)
	}
	if peer, err := netlink.LinkByName("peer0"); err != nil || netlink.LinkSetUp(peer) != nil {
		fail("peer0 up", err)
	}
	if err := unix.Chroot(root); err != nil {
		fail("chroot", err)
	}
	if err := os.Chdir("/"); err != nil {
		fail("chdir", err)
	}
	// The kernel gives init an almost empty environment.
	err = unix.Exec(InitPath, []string{InitPath}, []string{"HOME=/", "TERM=linux"})
	fail("exec", err)
}
