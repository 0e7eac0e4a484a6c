package guestinit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// testServer is the guest SSH server running in-process on loopback with
// a Reaper that only waits for its own children.
type testServer struct {
	addr      string
	hostKey   ssh.PublicKey
	clientKey ssh.Signer
	srv       *Server
	poweroffs atomic.Int32
}

func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startTestServer(t testing.TB, mod func(*ServerConfig)) *testServer {
	t.Helper()
	ts := &testServer{clientKey: newSigner(t)}
	host := newSigner(t)
	ts.hostKey = host.PublicKey()
	reaper := NewReaper(false, nil)
	t.Cleanup(reaper.Close)
	cfg := ServerConfig{
		HostKey:        host,
		AuthorizedKeys: []ssh.PublicKey{ts.clientKey.PublicKey()},
		Reaper:         reaper,
		Poweroff:       func() { ts.poweroffs.Add(1) },
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = l.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

func (ts *testServer) dialAs(t testing.TB, user string, key ssh.Signer) (*ssh.Client, error) {
	t.Helper()
	c, err := ssh.Dial("tcp", ts.addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(ts.hostKey),
		Timeout:         10 * time.Second,
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func (ts *testServer) dial(t testing.TB) *ssh.Client {
	t.Helper()
	c, err := ts.dialAs(t, "root", ts.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type result struct {
	stdout, stderr string
	code           int
	signal         string
}

// run runs cmd in a new session with stdin and env requests.
func run(t *testing.T, c *ssh.Client, cmd, stdin string, env ...string) result {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		if err := s.Setenv(k, v); err != nil {
			t.Fatalf("setenv %s: %v", k, err)
		}
	}
	var out, errb bytes.Buffer
	s.Stdin, s.Stdout, s.Stderr = strings.NewReader(stdin), &out, &errb
	err = s.Run(cmd)
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *ssh.ExitError
	switch {
	case errors.As(err, &ee):
		r.code, r.signal = ee.ExitStatus(), ee.Signal()
	case err != nil:
		t.Fatalf("run %q: %v", cmd, err)
	}
	return r
}

func TestExec(t *testing.T) {
	ts := startTestServer(t, func(c *ServerConfig) { c.ImageEnv = []string{"FROM_IMAGE=yes", "PATH=/usr/bin:/bin"} })
	c := ts.dial(t)
	me, err := resolveUser(strconv.Itoa(os.Geteuid()), readEtc(t, "passwd"), readEtc(t, "group"))
	if err != nil {
		t.Fatal(err)
	}
	plain := t.TempDir() + "/plain"
	writeTestFile(t, plain, "not a program\n")
	tests := []struct {
		name  string
		cmd   string
		stdin string
		env   []string
		want  result
	}{
		{name: "argv, no shell", cmd: EncodeArgv([]string{"/bin/echo", "a", "b c"}), want: result{stdout: "a b c\n"}},
		{name: "argv searched in PATH", cmd: EncodeArgv([]string{"echo", "$HOME", "*"}), want: result{stdout: "$HOME *\n"}},
		{name: "shell string exit status", cmd: "exit 7", want: result{code: 7}},
		{name: "stdout and stderr apart", cmd: "echo out; echo err >&2; exit 3", want: result{stdout: "out\n", stderr: "err\n", code: 3}},
		{name: "stdin", cmd: EncodeArgv([]string{"cat"}), stdin: "hello\nworld", want: result{stdout: "hello\nworld"}},
		{name: "env request", cmd: `echo "$FOO|$HOME|$USER"`, env: []string{"FOO=bar baz"}, want: result{stdout: "bar baz|" + me.Home + "|" + me.Name + "\n"}},
		{name: "banger vars consumed", cmd: `env | grep -c ^BANGER_ || true`, env: []string{"BANGER_WORKDIR=/", "BANGER_IMAGE_ENV=1"}, want: result{stdout: "0\n"}},
		{name: "image env on request", cmd: `echo "$FROM_IMAGE|$PATH"`, env: []string{"BANGER_IMAGE_ENV=1"}, want: result{stdout: "yes|/usr/bin:/bin\n"}},
		{name: "image env not by default", cmd: `echo "$FROM_IMAGE"`, want: result{stdout: "\n"}},
		{name: "session env beats image env", cmd: `echo "$FROM_IMAGE"`, env: []string{"BANGER_IMAGE_ENV=1", "FROM_IMAGE=session"}, want: result{stdout: "session\n"}},
		{name: "workdir", cmd: EncodeArgv([]string{"pwd"}), env: []string{"BANGER_WORKDIR=/usr/bin"}, want: result{stdout: "/usr/bin\n"}},
		{name: "workdir missing", cmd: EncodeArgv([]string{"pwd"}), env: []string{"BANGER_WORKDIR=/no/such/dir"}, want: result{code: 1, stderr: "banger-init: working directory /no/such/dir: not a directory in the guest\n"}},
		{name: "missing binary", cmd: EncodeArgv([]string{"/no/such/binary", "x"}), want: result{code: 127, stderr: "banger-init: /no/such/binary: command not found\n"}},
		{name: "missing command in PATH", cmd: EncodeArgv([]string{"no-such-command-xyz"}), want: result{code: 127, stderr: "banger-init: no-such-command-xyz: command not found\n"}},
		{name: "not executable", cmd: EncodeArgv([]string{plain}), want: result{code: 126, stderr: "banger-init: " + plain + ": permission denied\n"}},
		{name: "malformed argv", cmd: argvPrefix + "[", want: result{code: 127, stderr: "banger-init: malformed argv command: unexpected end of JSON input\n"}},
		{name: "unknown built-in", cmd: EncodeArgv([]string{InitPath, "frobnicate"}), want: result{code: 127, stderr: "banger-init: frobnicate: unknown built-in (have untar, tar, authorize, poweroff, features)\n"}},
		{name: "features", cmd: EncodeArgv([]string{InitPath, "features"}), want: result{code: 0, stdout: UntarFeatures + "\n"}},
		{name: "unknown user", cmd: EncodeArgv([]string{"true"}), env: []string{"BANGER_USER=no-such-user-xyz"}, want: result{code: 1, stderr: "banger-init: user \"no-such-user-xyz\": no such user in the guest's /etc/passwd\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := run(t, c, tt.cmd, tt.stdin, tt.env...)
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestExecAsOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	ts := startTestServer(t, nil)
	c := ts.dial(t)
	got := run(t, c, EncodeArgv([]string{"id"}), "", "BANGER_USER=65534:65533", "BANGER_WORKDIR=/")
	want := result{stdout: "uid=65534(nobody) gid=65533 groups=65533\n"}
	if u, err := resolveUser("65534", readEtc(t, "passwd"), readEtc(t, "group")); err != nil || u.Name != "nobody" {
		want.stdout = "uid=65534 gid=65533 groups=65533\n"
	}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func readEtc(t *testing.T, name string) []byte {
	data, _ := os.ReadFile("/etc/" + name)
	return data
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// waitGone waits for pid to be gone (reaped).
func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d still there after %v", pid, d)
}

func TestUnauthorizedKeyRefused(t *testing.T) {
	ts := startTestServer(t, nil)
	if _, err := ts.dialAs(t, "root", newSigner(t)); err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("dial with an unknown key: %v, want an authentication failure", err)
	}
	// No keys at all: nobody gets in.
	ts = startTestServer(t, func(c *ServerConfig) { c.AuthorizedKeys = nil })
	if _, err := ts.dialAs(t, "root", ts.clientKey); err == nil {
		t.Fatal("a server with no authorized keys let a client in")
	}
}

func TestPoweroffBuiltin(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.dial(t)
	if got := run(t, c, EncodeArgv([]string{InitPath, "poweroff"}), ""); got != (result{}) {
		t.Errorf("poweroff: %+v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for ts.poweroffs.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ts.poweroffs.Load(); n != 1 {
		t.Errorf("Poweroff called %d times, want 1", n)
	}

	ts = startTestServer(t, func(c *ServerConfig) { c.Poweroff = nil })
	c = ts.dial(t)
	if got := run(t, c, EncodeArgv([]string{InitPath, "poweroff"}), ""); got.code != 1 {
		t.Errorf("poweroff without a Poweroff hook: %+v", got)
	}
}

func TestDirectTCPIP(t *testing.T) {
	ts := startTestServer(t, nil)
	c := ts.dial(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, 5)
		if _, err := conn.Read(buf); err == nil {
			conn.Write(bytes.ToUpper(buf))
		}
	}()
	conn, err := c.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := conn.Read(buf); err != nil || string(buf) != "HELLO" {
		t.Errorf("read %q, %v", buf, err)
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkServerReady measures what the init does between having its
// configuration and SSH listening: host key generation, NewServer, Listen.
func BenchmarkServerReady(b *testing.B) {
	reaper := NewReaper(false, nil)
	defer reaper.Close()
	for b.Loop() {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		signer, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			b.Fatal(err)
		}
		srv, err := NewServer(ServerConfig{HostKey: signer, Reaper: reaper})
		if err != nil {
			b.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(l)
		srv.Close()
	}
}
