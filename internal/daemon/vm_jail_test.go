package daemon

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/config"
)

// TestJailedLaunchFailureRemovesJail: when the jailer fails, the jail the
// daemon prepared for it goes, and nothing else under the base does.
func TestJailedLaunchFailureRemovesJail(t *testing.T) {
	// A short directory: the API socket's path in the jail must fit a
	// unix socket address.
	dir, err := os.MkdirTemp("", "bgj")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fc := write("firecracker", "#!/bin/sh\nexit 0\n", 0o755)
	jailer := write("jailer", "#!/bin/sh\necho 'Jailer error: no KVM here' >&2\nexit 1\n", 0o755)
	cfg := config.Default()
	cfg.Root = filepath.Join(dir, "root")
	cfg.FirecrackerBinary, cfg.JailerBinary = fc, jailer
	cfg.JailerUID, cfg.JailerGID = os.Getuid(), os.Getgid()
	m := &vmManager{config: cfg, logger: slog.New(slog.DiscardHandler)}
	spec := bootSpec{
		ID: "0123456789abcdef", Kernel: write("vmlinux", "k", 0o644), Disk: write("disk", "d", 0o600),
		TAP: "bgt0123456789ab", MAC: "02:00:00:00:00:01", VCPUs: 1, MemoryMiB: 128,
		ConsoleLog: filepath.Join(dir, "console.log"), VMMLog: filepath.Join(dir, "vmm.log"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = m.launchFirecracker(ctx, spec)
	if err == nil || !strings.Contains(err.Error(), "exited during start-up") {
		t.Fatalf("launch = %v; want the jailer's early exit", err)
	}
	base := cfg.JailBase()
	if _, err := os.Stat(filepath.Join(base, "firecracker", spec.ID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the jail survived a failed launch: %v", err)
	}
	if _, err := os.Stat(filepath.Join(base, "firecracker")); err != nil {
		t.Errorf("the base's directory for the binary: %v", err)
	}
	if b, err := os.ReadFile(spec.Disk); err != nil || string(b) != "d" {
		t.Errorf("the VM's disk after the failed launch: %q, %v", b, err)
	}
}
