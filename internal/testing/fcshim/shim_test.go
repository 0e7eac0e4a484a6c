package fcshim

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/daemon/fcproc"
	"banger/internal/testing/guestboot"
)

// These tests run the fcshim binary the way banger runs Firecracker:
// through fcproc (Start, Configure, Shutdown, Kill). The ones that boot a
// guest need root and QEMU and skip in -short; TestShimAPIOverSocket needs
// only go.

// startShim starts the shim through fcproc and, when the test ends, kills
// it and any QEMU of VM id still running.
func startShim(t *testing.T, cfg fcproc.Config) *fcproc.Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := fcproc.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("fcproc.Start(shim): %v", err)
	}
	t.Cleanup(func() {
		p.Kill()
		p.Wait()
		if pid := findQEMU(cfg.ID); pid != 0 {
			t.Errorf("QEMU (pid %d) for %s outlived its shim; killing it", pid, cfg.ID)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return p
}

// bootConfig is the fcproc configuration of a test VM: the shared kernel
// and read-only root image, its files in a temp dir.
func bootConfig(t *testing.T, id string) (fcproc.Config, fcproc.MachineConfig) {
	t.Helper()
	g := sharedGuest(t)
	dir := t.TempDir()
	cfg := fcproc.Config{
		ID:         id,
		Binary:     g.Shim,
		APISocket:  filepath.Join(dir, "fc.sock"),
		ConsoleLog: filepath.Join(dir, "console.log"),
	}
	mc := fcproc.MachineConfig{
		Logger:     &fcproc.Logger{LogPath: filepath.Join(dir, "fc.log"), Level: fcproc.LogLevelInfo},
		Machine:    fcproc.MachineConfiguration{VCPUCount: 2, MemSizeMiB: 256},
		BootSource: fcproc.BootSource{KernelImagePath: g.Kernel, InitrdPath: g.Initrd, BootArgs: "console=ttyS0 reboot=k panic=1 quiet"},
		Drives:     []fcproc.Drive{{DriveID: "rootfs", PathOnHost: g.Root, IsRootDevice: true, IsReadOnly: true}},
	}
	return cfg, mc
}

// TestShimBootShutdown boots a read-only root and a writable data disk
// through fcproc and the shim, then stops the guest with fcproc's
// Shutdown: SendCtrlAltDel must reach the guest init as SIGINT, the guest
// powers off, the shim exits 0 and its QEMU is gone.
func TestShimBootShutdown(t *testing.T) {
	requireBootHost(t)
	cfg, mc := bootConfig(t, "shim-boot")
	data := filepath.Join(t.TempDir(), "data.raw")
	if err := os.WriteFile(data, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	// Added before the root drive: Firecracker (and so the shim) still
	// makes the root drive /dev/vda.
	mc.Drives = append([]fcproc.Drive{{DriveID: "data", PathOnHost: data}}, mc.Drives...)

	start := time.Now()
	p := startShim(t, cfg)
	toAPI := time.Since(start)
	ctx := context.Background()
	cstart := time.Now()
	if err := p.Configure(ctx, mc); err != nil {
		t.Fatalf("Configure: %v\n--- shim output:\n%s", err, p.Output())
	}
	toConfigured := time.Since(cstart)
	line := waitConsole(t, cfg.ConsoleLog, readyMarker, p.Exited)
	toReady := time.Since(start)
	t.Logf("guest: %s", line)
	for key, want := range map[string]string{"vda_ro": "1", "vdb_ro": "0", "mac": "none", "cad": "ok"} {
		if got := guestboot.Field(line, key); got != want {
			t.Errorf("guest reports %s=%s, want %s", key, got, want)
		}
	}
	cmdline := waitConsole(t, cfg.ConsoleLog, cmdlineMarker, p.Exited)
	t.Logf("guest: %s", cmdline)
	for _, want := range []string{"console=ttyS0 reboot=k panic=1 quiet", "pci=off", "root=/dev/vda ro", "tsc_early_khz="} {
		if !strings.Contains(cmdline, want) {
			t.Errorf("guest command line %q lacks %q", cmdline, want)
		}
	}
	if info, err := p.Info(ctx); err != nil || info.State != fcproc.StateRunning || info.ID != cfg.ID {
		t.Errorf("Info = %+v, %v; want %s Running", info, err, cfg.ID)
	}
	qpid := findQEMU(cfg.ID)
	if qpid == 0 {
		t.Fatal("no QEMU process runs the VM")
	}
	if pp := parentPID(qpid); pp != p.PID() {
		t.Errorf("QEMU (pid %d) has parent %d, want the shim (%d)", qpid, pp, p.PID())
	}

	const grace = 30 * time.Second
	sctx, cancel := context.WithTimeout(ctx, grace+10*time.Second)
	defer cancel()
	stop := time.Now()
	ended, err := p.Shutdown(sctx, grace)
	took := time.Since(stop)
	if err != nil || ended != fcproc.EndedByGuest {
		t.Errorf("Shutdown = %q, %v; want %q (the guest did not power off within %v)", ended, err, fcproc.EndedByGuest, grace)
	}
	if code, err := p.Wait(); code != 0 || err != nil {
		t.Errorf("the shim exited %d, %v; want 0 as Firecracker does when the guest powers off\n%s", code, err, p.Output())
	}
	console, _ := os.ReadFile(cfg.ConsoleLog)
	if !strings.Contains(string(console), sigintMarker) {
		t.Errorf("the guest init never saw SIGINT; console:\n%s", guestboot.LastLines(string(console), 20))
	}
	if syscall.Kill(qpid, 0) != syscall.ESRCH {
		t.Errorf("QEMU (pid %d) still exists after the shim exited", qpid)
	}
	// Like Firecracker, the shim leaves its socket file behind: removing
	// it is the caller's job (and fcproc.Start replaces a stale one).
	if st, err := os.Stat(cfg.APISocket); err != nil || st.Mode().Type() != os.ModeSocket {
		t.Errorf("the API socket %s: %v; Firecracker leaves it behind", cfg.APISocket, err)
	}
	if log, _ := os.ReadFile(mc.Logger.LogPath); !strings.Contains(string(log), "booted under QEMU") {
		t.Errorf("the shim's log (PUT /logger) lacks the boot line:\n%s", log)
	}
	t.Logf("timings: fcproc.Start (API answers) %v, Configure incl. InstanceStart %v, start -> %s %v, Shutdown (SendCtrlAltDel -> shim exit) %v",
		toAPI.Round(time.Millisecond), toConfigured.Round(time.Millisecond), readyMarker, toReady.Round(time.Millisecond), took.Round(time.Millisecond))
}

// TestShimNICInNamespace gives the guest a NIC on a TAP inside a network
// namespace the test makes; fcproc runs the shim there through nsenter and
// the shim's QEMU inherits it. The guest's eth0 must have the configured
// MAC. Nothing is created in the host's namespace and nothing is sent: the
// guest init never brings eth0 up.
func TestShimNICInNamespace(t *testing.T) {
	requireBootHost(t)
	for _, tool := range []string{"ip", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, tool+" is not installed (Debian packages iproute2, util-linux)")
		}
	}
	ns := guestboot.NewNetNS(t, "bgf")
	const tap, mac = "bgftap0", "02:42:ac:1e:00:09"
	guestboot.Run(t, "ip", "-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
	guestboot.Run(t, "ip", "-n", ns, "link", "set", tap, "up")

	cfg, mc := bootConfig(t, "shim-nic")
	cfg.NetNS = ns
	mc.NetworkInterfaces = []fcproc.NetworkInterface{{IfaceID: "eth0", HostDevName: tap, GuestMAC: mac}}
	start := time.Now()
	p := startShim(t, cfg)
	if err := p.Configure(context.Background(), mc); err != nil {
		t.Fatalf("Configure: %v\n--- shim output:\n%s", err, p.Output())
	}
	line := waitConsole(t, cfg.ConsoleLog, readyMarker, p.Exited)
	toReady := time.Since(start)
	t.Logf("guest: %s", line)
	if got := guestboot.Field(line, "mac"); got != mac {
		t.Errorf("guest eth0 MAC %q, want %q", got, mac)
	}
	qpid := findQEMU(cfg.ID)
	for what, pid := range map[string]int{"the shim": p.PID(), "QEMU": qpid} {
		if !inNetNS(t, pid, ns) {
			t.Errorf("%s (pid %d) is not in namespace %s", what, pid, ns)
		}
	}
	if err := exec.Command("ip", "link", "show", "dev", tap).Run(); err == nil {
		t.Errorf("a %s device exists in the host's namespace", tap)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if ended, err := p.Shutdown(ctx, 30*time.Second); err != nil || ended != fcproc.EndedByGuest {
		t.Errorf("Shutdown = %q, %v; want %q", ended, err, fcproc.EndedByGuest)
	}
	if code, _ := p.Wait(); code != 0 {
		t.Errorf("the shim exited %d, want 0", code)
	}
	if qpid != 0 && syscall.Kill(qpid, 0) != syscall.ESRCH {
		t.Errorf("QEMU (pid %d) still exists", qpid)
	}
	t.Logf("timings: start -> %s %v (with a NIC, in namespace %s)", readyMarker, toReady.Round(time.Millisecond), ns)
}

// TestShimSignalTakesQEMU stops a shim whose VM is running with a signal:
// with SIGTERM the shim kills QEMU and dies of the signal; with SIGKILL it
// cannot, and QEMU's parent-death signal ends it. Either way no QEMU is
// left.
func TestShimSignalTakesQEMU(t *testing.T) {
	requireBootHost(t)
	for name, sig := range map[string]syscall.Signal{"term": syscall.SIGTERM, "kill": syscall.SIGKILL} {
		t.Run("SIG"+strings.ToUpper(name), func(t *testing.T) {
			cfg, mc := bootConfig(t, "shim-"+name)
			p := startShim(t, cfg)
			if err := p.Configure(context.Background(), mc); err != nil {
				t.Fatalf("Configure: %v", err)
			}
			qpid := findQEMU(cfg.ID)
			if qpid == 0 {
				t.Fatal("no QEMU process runs the VM after InstanceStart")
			}
			stop := time.Now()
			if err := syscall.Kill(p.PID(), sig); err != nil {
				t.Fatal(err)
			}
			code, err := p.Wait()
			var ee *exec.ExitError
			if code != -1 || !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != sig {
				t.Errorf("the shim ended %d, %v; want death by %v", code, err, sig)
			}
			if !gone(qpid, 10*time.Second) {
				t.Errorf("QEMU (pid %d) still runs %v after the shim got %v", qpid, 10*time.Second, sig)
			}
			t.Logf("%v -> shim and QEMU gone in %v", sig, time.Since(stop).Round(time.Millisecond))
		})
	}
}

// TestShimAPIOverSocket talks to the shim binary over its real socket
// (Go's HTTP server in front of the handler) without booting: refusals
// arrive as Firecracker's, a shim stopped before InstanceStart
// (SendCtrlAltDel refused, then SIGTERM) ends at once, and a new shim
// starts on the socket file the old one left.
func TestShimAPIOverSocket(t *testing.T) {
	shim := sharedShim(t)
	dir := t.TempDir()
	cfg := fcproc.Config{ID: "shim-api", Binary: shim, APISocket: filepath.Join(dir, "fc.sock"), ConsoleLog: filepath.Join(dir, "console.log")}
	p := startShim(t, cfg)
	ctx := context.Background()
	c := p.Client()
	if info, err := c.InstanceInfo(ctx); err != nil || info.ID != "shim-api" || info.State != fcproc.StateNotStarted || info.VMMVersion != VMMVersion {
		t.Errorf("InstanceInfo = %+v, %v", info, err)
	}
	err := c.PutDrive(ctx, fcproc.Drive{DriveID: "rootfs", PathOnHost: filepath.Join(dir, "missing.ext4"), IsRootDevice: true})
	var ae *fcproc.APIError
	if !errors.As(err, &ae) || ae.StatusCode != 400 || !strings.Contains(ae.FaultMessage, "No such file or directory") {
		t.Errorf("PutDrive(missing image) = %v; want a 400 naming the missing file", err)
	}
	if err := c.Action(ctx, fcproc.ActionInstanceStart); !errors.As(err, &ae) || !strings.Contains(ae.FaultMessage, "without kernel configuration") {
		t.Errorf("InstanceStart without a boot source = %v", err)
	}

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", cfg.APISocket)
	}}}
	defer hc.CloseIdleConnections()
	for _, tt := range []struct{ method, path, body, want string }{
		{"POST", "/actions", `{"action_type":"InstanceStart"}`, "Invalid HTTP Method"},
		{"PUT", "/machine-config", `{"vcpu_count":1,"mem_size_mib":128,"vcpus":2}`, "unknown field `vcpus`"},
		{"PUT", "/machine-config", "", "Empty PUT request."},
	} {
		req, _ := http.NewRequest(tt.method, "http://localhost"+tt.path, strings.NewReader(tt.body))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), tt.want) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %q; want 400 with %q", tt.method, tt.path, resp.StatusCode, body, tt.want)
		}
	}

	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	ended, err := p.Shutdown(sctx, 10*time.Second)
	if err != nil || ended != fcproc.EndedByTerm || time.Since(start) > 5*time.Second {
		t.Errorf("Shutdown before boot = %q, %v after %v; want %q without the grace period", ended, err, time.Since(start), fcproc.EndedByTerm)
	}
	again := startShim(t, cfg)
	if _, err := again.Info(ctx); err != nil {
		t.Errorf("a second shim on the stale socket: %v", err)
	}
}

// inNetNS reports whether pid is in the network namespace ns.
func inNetNS(t *testing.T, pid int, ns string) bool {
	t.Helper()
	var nsSt, procSt syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", ns), &nsSt); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"), &procSt); err != nil {
		return false
	}
	return nsSt.Ino == procSt.Ino && nsSt.Dev == procSt.Dev
}
