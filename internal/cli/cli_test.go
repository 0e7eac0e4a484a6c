package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"banger/internal/rpc"
)

// isolate points the CLI at an empty config file and clears the BANGER_*
// variables, so the host's /etc/banger and environment do not leak in.
func isolate(t *testing.T) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BANGER_CONFIG", cfg)
	t.Setenv("BANGER_ROOT", "")
	t.Setenv("BANGER_SOCKET", "")
}

// shortDir is a temp dir short enough for unix socket paths.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bgr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runCLI runs the CLI in-process and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// fakeDaemon serves vm.list on a unix socket, answering one VM named
// vmName, and returns the socket path.
func fakeDaemon(t *testing.T, vmName string) string {
	t.Helper()
	sock := filepath.Join(shortDir(t), "fake.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &rpc.Server{Handler: rpc.HandlerFunc(func(ctx context.Context, call *rpc.Call) (any, error) {
		if call.Method != rpc.MethodVMList {
			return nil, rpc.Errorf(rpc.CodeMethodNotFound, "method %q not found", call.Method)
		}
		return rpc.VMListResult{VMs: []rpc.VM{{ID: "0123456789abcdef", Name: vmName, State: "running", Image: "debian", VCPUs: 2, MemoryMiB: 512}}}, nil
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shut down fake daemon: %v", err)
		}
		if err := <-served; !errors.Is(err, rpc.ErrServerClosed) {
			t.Errorf("fake daemon Serve = %v, want ErrServerClosed", err)
		}
	})
	return sock
}

func TestVersion(t *testing.T) {
	isolate(t)
	code, out, errOut := runCLI(t, "version")
	if code != 0 {
		t.Fatalf("version exited %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "banger ") || !strings.HasPrefix(lines[1], "commit: ") || lines[2] != "go: "+runtime.Version() {
		t.Errorf("version printed %q, want lines \"banger V\", \"commit: C\", \"go: %s\"", out, runtime.Version())
	}
}

func TestVersionJSON(t *testing.T) {
	isolate(t)
	code, out, errOut := runCLI(t, "version", "-o", "json")
	if code != 0 {
		t.Fatalf("version -o json exited %d: %s", code, errOut)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("version -o json printed %q: %v", out, err)
	}
	for _, k := range []string{"version", "commit", "go_version"} {
		if s, _ := v[k].(string); s == "" {
			t.Errorf("version -o json: %q is %v, want a non-empty string (output %s)", k, v[k], out)
		}
	}
	if v["go_version"] != runtime.Version() {
		t.Errorf("go_version = %v, want %s", v["go_version"], runtime.Version())
	}
}

func TestUnknownOutputFormat(t *testing.T) {
	isolate(t)
	code, out, errOut := runCLI(t, "version", "-o", "yaml")
	if code != 1 {
		t.Errorf("version -o yaml exited %d, want 1", code)
	}
	if out != "" {
		t.Errorf("version -o yaml printed %q to stdout, want nothing", out)
	}
	if !strings.Contains(errOut, "-o") || !strings.Contains(errOut, "yaml") {
		t.Errorf("stderr %q does not name -o and the bad value", errOut)
	}
}

func TestLsDaemonNotRunning(t *testing.T) {
	isolate(t)
	sock := filepath.Join(shortDir(t), "none.sock")
	code, out, errOut := runCLI(t, "ls", "--socket", sock)
	if code != 1 {
		t.Errorf("ls exited %d, want 1", code)
	}
	for _, want := range []string{"not running", sock, "banger daemon"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q does not contain %q", errOut, want)
		}
	}
	for _, bad := range []string{"goroutine ", "panic"} {
		if strings.Contains(out+errOut, bad) {
			t.Errorf("output contains %q:\n%s%s", bad, out, errOut)
		}
	}
}

func TestCompletionBash(t *testing.T) {
	isolate(t)
	code, out, errOut := runCLI(t, "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash exited %d: %s", code, errOut)
	}
	if !strings.Contains(out, "banger") || !strings.Contains(out, "complete ") {
		t.Errorf("completion bash printed no bash completion for banger:\n%.500s", out)
	}
}

func TestConfigUnknownKey(t *testing.T) {
	isolate(t)
	cfg := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(cfg, []byte("sockett = \"/x\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI(t, "ls", "--config", cfg, "--socket", filepath.Join(shortDir(t), "s.sock"))
	if code != 1 {
		t.Errorf("ls exited %d, want 1", code)
	}
	for _, want := range []string{"sockett", cfg} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q does not contain %q", errOut, want)
		}
	}
}

func TestLsFromFakeDaemon(t *testing.T) {
	isolate(t)
	sock := fakeDaemon(t, "devbox")
	code, out, errOut := runCLI(t, "ls", "--socket", sock)
	if code != 0 {
		t.Fatalf("ls exited %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") {
		t.Fatalf("ls printed %q, want a header and one row", out)
	}
	if f := strings.Fields(lines[1]); len(f) < 4 || f[0] != "devbox" || f[1] != "0123456789ab" || f[2] != "running" || f[3] != "debian" {
		t.Errorf("ls row = %q, want devbox 0123456789ab running debian ...", lines[1])
	}

	code, out, errOut = runCLI(t, "ls", "--socket", sock, "-o", "json")
	if code != 0 {
		t.Fatalf("ls -o json exited %d: %s", code, errOut)
	}
	var vms []rpc.VM
	if err := json.Unmarshal([]byte(out), &vms); err != nil {
		t.Fatalf("ls -o json printed %q: %v", out, err)
	}
	if len(vms) != 1 || vms[0].Name != "devbox" || vms[0].MemoryMiB != 512 {
		t.Errorf("ls -o json = %+v, want the one VM devbox with 512 MiB", vms)
	}
}

func TestSocketFromEnv(t *testing.T) {
	isolate(t)
	t.Setenv("BANGER_SOCKET", fakeDaemon(t, "from-env"))
	code, out, errOut := runCLI(t, "ls")
	if code != 0 {
		t.Fatalf("ls with BANGER_SOCKET exited %d: %s", code, errOut)
	}
	if !strings.Contains(out, "from-env") {
		t.Errorf("ls printed %q, want the VM of the daemon BANGER_SOCKET names", out)
	}
}

func TestSocketFlagBeatsEnv(t *testing.T) {
	isolate(t)
	t.Setenv("BANGER_SOCKET", fakeDaemon(t, "from-env"))
	code, out, errOut := runCLI(t, "ls", "--socket", fakeDaemon(t, "from-flag"))
	if code != 0 {
		t.Fatalf("ls exited %d: %s", code, errOut)
	}
	if !strings.Contains(out, "from-flag") || strings.Contains(out, "from-env") {
		t.Errorf("ls printed %q, want only the VM of the daemon --socket names", out)
	}
}
