package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSSHConfigAndProxy: the system ssh client reaches a guest through
// `banger ssh-config` and `banger proxy`, with the user's own key, the
// guest's host key checked strictly.
func TestSSHConfigAndProxy(t *testing.T) {
	requireTier3(t)
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("no ssh client (Debian package openssh-client)")
	}
	e := newEnv(t, "vmm = \"qemu\"\n")
	e.setupGitImage() // the README's base image: busybox (and git)
	e.ok("create", "--image", "gitimg", "--name", "sigma")

	key := filepath.Join(e.dir, "id")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	known := filepath.Join(e.dir, "known_hosts")
	conf := e.ok("ssh-config", "sigma", "--identity", key+".pub", "--known-hosts", known)
	if !strings.Contains(conf, "ProxyCommand") || !strings.Contains(conf, "StrictHostKeyChecking yes") {
		t.Fatalf("ssh-config printed:\n%s", conf)
	}
	confFile := filepath.Join(e.dir, "ssh_config")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ssh := func(host, command string) (string, error) {
		out, err := exec.Command("ssh", "-F", confFile, "-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
			"-o", "ConnectTimeout=30", host, command).CombinedOutput()
		return string(out), err
	}
	out, err := ssh("sigma", "echo hello from $(hostname)")
	if err != nil || strings.TrimSpace(out) != "hello from sigma" {
		t.Fatalf("ssh sigma: %v\n%s", err, out)
	}
	if out, err := ssh("sigma.vm.banger", "exit 5"); err == nil {
		t.Errorf("ssh exit 5 succeeded: %s", out)
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
		t.Errorf("ssh exit 5: %v", err)
	}
	// A key that was never added is refused.
	other := filepath.Join(e.dir, "other")
	exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).Run()
	if out, err := exec.Command("ssh", "-F", confFile, "-i", other, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "sigma", "true").CombinedOutput(); err == nil {
		t.Errorf("ssh with a key never added succeeded: %s", out)
	}
	e.ok("rm", "--force", "sigma")
}
