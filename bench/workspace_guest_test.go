package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/daemon/workspace"
)

// BenchmarkWorkspaceGuest measures a real workspace import into a running
// guest (QEMU, TCG here), in one run and into the same guest:
//
//   - banger: `banger workspace prepare` of a synthetic 20,000-file /
//     ~100 MB checkout (syntheticRepo: one commit, gc'd) — the pack helper
//     as the caller, SSH to the guest, the guest init's untar built-in;
//   - tool chain: `git ls-files -z | tar --null -T - -cf - | banger exec -i
//     VM -- tar -xf - -C /baseline` (busybox tar in the guest; banger exec
//     stands in for ssh: same guest SSH server, through the daemon's
//     socket instead of a TCP route);
//   - incremental: a second prepare after changing 10 files.
//
// The checkout is the synthetic one, or with BANGER_BENCH_CHECKOUT=goroot
// real source code: a copy of the Go distribution's src/ (go env GOROOT),
// committed once and gc'd.
//
// Needs root, QEMU and apt-get download (base-image.sh); only with -bench.
func BenchmarkWorkspaceGuest(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: network namespace, TAPs, the daemon")
	}
	for _, tool := range []string{"qemu-system-x86_64", "git", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed", tool)
		}
	}
	g := workspace.ExecGit{Env: []string{"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=" + os.DevNull,
		"GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@b", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@b"}}
	d, _ := busyboxDaemon(b, "") // its bench-init is unused here
	repo, files := benchCheckout(b, g)

	var first, baseline, incr time.Duration
	var sentMiB, wireMiB float64
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("w%d", i)
		d.ok("create", "--image", "busybox", "--name", name, "--disk", "2", "--mem", "512")
		b.Cleanup(func() { exec.Command(d.bin, append(append([]string{}, d.args...), "rm", "--force", name)...).Run() })

		d.ok("exec", name, "--", "mkdir", "-p", "/baseline")
		// bash -c SCRIPT banger FLAGS... VM: $0 is banger, the last
		// argument the VM, the rest its global flags.
		script := `set -o pipefail; vm=${@: -1}; set -- "${@:1:$#-1}"; git ls-files -z | tar --null -T - -cf - | "$0" "$@" exec -i "$vm" -- tar -xf - -C /baseline`
		cmd := exec.Command("bash", append([]string{"-c", script, d.bin}, append(append([]string{}, d.args...), name)...)...)
		cmd.Dir = repo
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("baseline pipeline: %v\n%s", err, out)
		}
		baseline += time.Since(start)
		// Room for the import on the same disk.
		d.ok("exec", name, "--", "rm", "-rf", "/baseline")

		start = time.Now()
		out := d.ok("workspace", "prepare", name, repo, "-o", "json")
		first += time.Since(start)
		var res struct {
			SentBytes int64 `json:"sent_bytes"`
			WireBytes int64 `json:"wire_bytes"`
			Files     int
		}
		json.Unmarshal([]byte(out), &res)
		sentMiB += float64(res.SentBytes) / (1 << 20)
		wireMiB += float64(res.WireBytes) / (1 << 20)

		for j := 0; j < 10; j++ {
			p := filepath.Join(repo, files[(i*10+j*997)%len(files)])
			if err := os.WriteFile(p, []byte(fmt.Sprintf("changed %d %d\n", i, j)), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		start = time.Now()
		d.ok("workspace", "prepare", name, repo)
		incr += time.Since(start)
	}
	n := time.Duration(b.N)
	b.ReportMetric(float64(first/n)/float64(time.Second), "first-import-s")
	b.ReportMetric(float64(baseline/n)/float64(time.Second), "tar-pipeline-s")
	b.ReportMetric(float64(baseline)/float64(first), "pipeline/banger")
	b.ReportMetric(sentMiB/float64(b.N), "banger-MiB-sent")
	b.ReportMetric(wireMiB/float64(b.N), "banger-MiB-wire")
	b.ReportMetric(float64(incr/n)/float64(time.Millisecond), "incremental-ms")
}

// benchCheckout is the checkout BenchmarkWorkspaceGuest imports and the
// files it may change (see its doc).
func benchCheckout(b *testing.B, g workspace.ExecGit) (string, []string) {
	if os.Getenv("BANGER_BENCH_CHECKOUT") != "goroot" {
		return syntheticRepo(b, g, 20000, 100<<20)
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Fatalf("go env GOROOT: %v", err)
	}
	dir := filepath.Join(b.TempDir(), "goroot-src")
	if out, err := exec.Command("cp", "-a", filepath.Join(strings.TrimSpace(string(goroot)), "src"), dir).CombinedOutput(); err != nil {
		b.Fatalf("copy GOROOT/src: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"-c", "gc.auto=0", "commit", "-q", "-m", "go src"}, {"gc", "-q"}} {
		if err := g.Run(context.Background(), dir, nil, nil, nil, args...); err != nil {
			b.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := g.Run(context.Background(), dir, nil, nil, &out, "ls-files", "*.go"); err != nil {
		b.Fatal(err)
	}
	return dir, strings.Fields(out.String())
}
