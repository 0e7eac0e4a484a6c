package bench

import (
	"testing"
	"time"
)

// BenchmarkVMStartStop measures a stop/start round trip of a running VM on
// this host (QEMU, TCG here): `banger stop` (the guest is asked to power
// off; its VMM exits; TAP and handles released) and `banger start` until it
// returns, which is when the guest's SSH answers (exec-ready; one exec
// after it, untimed, checks). Baseline in the same run, what a user would
// otherwise do: the same kernel and disk under plain QEMU (no NIC, no SSH),
// killed (SIGKILL, reaped) and booted again to a shell script that prints a
// marker. The start is split as the daemon logs it: its own work (state,
// TAP, VMM spawn and configuration, DNS), the guest's boot to its init
// announcing SSH, and the SSH handshake.
func BenchmarkVMStartStop(b *testing.B) {
	// The baseline's guest stays up after the marker, as banger's does.
	d, kdir := busyboxDaemon(b, "exec sleep 100000")
	// m0 so that the daemon's cleanup removes it.
	d.ok("create", "--image", "busybox", "--name", "m0")
	plainDir := b.TempDir()
	plain, _ := plainQEMUStart(b, plainDir, kdir, d.imagePath("busybox"), "/bench-init")

	var stop, start, plainKill, plainBoot, daemon, guestBoot, ssh time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		d.ok("stop", "m0")
		t1 := time.Now()
		d.ok("start", "m0")
		t2 := time.Now()
		stop += t1.Sub(t0)
		start += t2.Sub(t1)
		b.StopTimer()
		// A start boots through the same path as a create, which logs
		// where its time went.
		line := d.lastLogLine(`msg="vm created" vm=m0`)
		daemon += logDur(b, line, "prepare") + logDur(b, line, "vmm_start") + logDur(b, line, "finish")
		guestBoot += logDur(b, line, "guest_boot")
		ssh += logDur(b, line, "ssh")
		if out := d.ok("exec", "m0", "--", "/bin/sh", "-c", "echo up"); out != "up\n" {
			b.Fatalf("exec after start printed %q", out)
		}

		t0 = time.Now()
		plain.Process.Kill()
		plain.Wait()
		plainKill += time.Since(t0)
		var took time.Duration
		plain, took = plainQEMUStart(b, plainDir, kdir, d.imagePath("busybox"), "/bench-init")
		plainBoot += took
		b.StartTimer()
	}
	b.StopTimer()
	n := time.Duration(b.N)
	ms := func(d time.Duration) float64 { return float64(d/n) / float64(time.Millisecond) }
	b.ReportMetric(ms(stop), "stop-ms")
	b.ReportMetric(ms(start), "start-ms")
	b.ReportMetric(ms(stop+start), "roundtrip-ms")
	b.ReportMetric(ms(daemon), "start-daemon-own-ms")
	b.ReportMetric(ms(guestBoot), "start-guest-boot-ms")
	b.ReportMetric(ms(ssh), "start-ssh-ms")
	b.ReportMetric(ms(plainKill), "plain-kill-ms")
	b.ReportMetric(ms(plainBoot), "plain-boot-ms")
	b.ReportMetric(ms(plainKill+plainBoot), "plain-roundtrip-ms")
	b.ReportMetric(float64(stop+start)/float64(plainKill+plainBoot), "roundtrip/plain")
}
