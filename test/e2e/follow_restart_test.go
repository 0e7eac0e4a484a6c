package e2e

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"banger/internal/testing/fakevmm"
	"banger/internal/testing/ocitest"
)

// TestCLIFollowingAcrossDaemonRestart: a CLI following an async operation
// (a create, a pull) when the daemon is SIGKILLed mid-operation waits for
// the daemon to come back, then says the daemon restarted, that the
// operation was interrupted, and where its VM or image ended up (as show
// reports it), and exits non-zero. The VMM is the fake QEMU.
func TestCLIFollowingAcrossDaemonRestart(t *testing.T) {
	requireTier3(t)
	fake := fakevmm.Build(t)
	e := newEnv(t, fmt.Sprintf("vmm = \"qemu\"\nqemu_binary = %q\nreconcile_interval = \"500ms\"\n", fake))
	e.setupCrashImage()
	e.ok("create", "--image", "crash", "--name", "f3")
	e.ok("stop", "f3")
	reg := ocitest.StartRegistry(t)
	ref := reg.Ref("follow:1")
	ocitest.Push(t, ref, ocitest.Image(t, ocitest.ImageConfig{},
		ocitest.Layer(t, ocitest.Dir("etc", 0o755), ocitest.File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"))))

	for _, tc := range []struct {
		name, point, kind string
		args              []string
		target            string
		want              []string // in the CLI's stderr, beside the common lines
		succeeded         bool     // the op had succeeded: the CLI goes on and exits 0
	}{
		{"create-rolled-back", "boot.vmm", "vm", []string{"create", "--image", "crash", "--name", "f1"}, "f1",
			[]string{"vm f1 does not exist now"}, false},
		{"start", "boot.ready", "vm", []string{"start", "f3"}, "f3", nil, false},
		{"pull", "pull.built", "image", []string{"image", "pull", ref, "--name", "f2"}, "f2",
			[]string{"image f2 does not exist now"}, false},
		{"create-succeeded", "op.finished", "vm", []string{"create", "--image", "crash", "--name", "f4"}, "f4",
			[]string{"had succeeded before it restarted", "vm f4 is now running"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			e.killDaemon()
			e.startDaemon("BANGER_TEST_CRASH_AT=" + tc.point)
			var stdout, stderr syncBuffer
			cli := exec.Command(e.bin, append(append([]string{}, e.args...), tc.args...)...)
			cli.Stdout, cli.Stderr = &stdout, &stderr
			if err := cli.Start(); err != nil {
				t.Fatal(err)
			}
			cliDone := make(chan error, 1)
			go func() { cliDone <- cli.Wait() }()
			// The daemon kills itself at the point; restart it as a
			// service manager would.
			select {
			case <-e.exited:
			case <-time.After(30 * time.Second):
				cli.Process.Kill()
				<-cliDone
				t.Fatalf("the daemon did not reach %s", tc.point)
			}
			e.startDaemon()
			var err error
			select {
			case err = <-cliDone:
			case <-time.After(90 * time.Second):
				cli.Process.Kill()
				<-cliDone
				t.Fatalf("the CLI did not end after the daemon came back; stderr:\n%s", stderr.String())
			}
			code := cli.ProcessState.ExitCode()
			errs := stderr.String()
			t.Logf("banger %s: exit %d, stderr:\n%s", strings.Join(tc.args, " "), code, errs)
			if tc.succeeded != (err == nil && code == 0) {
				t.Errorf("the CLI exited %d after the daemon restarted under it; want 0 exactly when the op had succeeded (%v)", code, tc.succeeded)
			}
			// Where the target is now, as the restarted daemon says.
			where := "does not exist now"
			if out, _, c := e.run(append(showCmd(tc.kind), tc.target, "-o", "json")...); c == 0 {
				var st struct{ State string }
				if err := json.Unmarshal([]byte(out), &st); err != nil {
					t.Fatal(err)
				}
				where = "is now " + st.State
			}
			want := append([]string{"connection to the daemon was lost", tc.kind + " " + tc.target + " " + where}, tc.want...)
			if !tc.succeeded {
				want = append(want, "the daemon restarted while operation", "it was interrupted")
			}
			for _, w := range want {
				if !strings.Contains(errs, w) {
					t.Errorf("the CLI's stderr does not say %q", w)
				}
			}
			e.checkConsistent(tc.name, tc.target)
			e.checkImages(tc.name)
		})
	}
	e.t = t
}

// showCmd is the CLI command that shows a VM or an image.
func showCmd(kind string) []string {
	if kind == "vm" {
		return []string{"show"}
	}
	return []string{kind, "show"}
}
