package daemon

import (
	"context"

	"banger/internal/config"
	"banger/internal/daemon/hostcheck"
	"banger/internal/system"
)

// DoctorReport is what Doctor finds: each host check with its fix, and the
// VMM and disk strategy banger will use here, with the reason.
type DoctorReport = hostcheck.Report

// Doctor checks the host for everything banger needs. It needs no running
// daemon and changes nothing (its probes use temporary files it removes).
func Doctor(ctx context.Context, cfg config.Config) DoctorReport {
	return hostcheck.Run(ctx, hostcheck.Options{
		Root: cfg.Root,
		VMM:  cfg.VMM,
		Disk: cfg.Disk,
		// The jailer matters only where Firecracker runs; it is checked
		// whenever it is configured.
		Jailer:    cfg.JailerBinary,
		JailerUID: cfg.JailerUID,
		Runner:    &system.ExecRunner{},
	})
}
