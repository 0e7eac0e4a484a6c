package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/daemon"
)

func (a *app) doctorCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check this host for what banger needs (no daemon needed)",
		Long: `Check this host for what banger needs: KVM, the VMMs, device-mapper,
loop devices, reflinks, TUN, bridges, nftables, IP forwarding, mkfs.ext4 and
free disk. Each check is ok, warn or fail with the fix; then the VMM and disk
strategy banger will use here, and why. Exits 1 when a check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			r := daemon.Doctor(cmd.Context(), cfg)
			if a.jsonOutput() {
				if err := printJSON(a.stdout, r); err != nil {
					return err
				}
			} else {
				t := newTable(a.stdout, "CHECK", "STATUS", "DETAIL")
				for _, c := range r.Checks {
					t.row(c.Name, strings.ToUpper(string(c.Status)), c.Detail)
				}
				t.flush()
				var fixes []string
				for _, c := range r.Checks {
					if c.Status != "ok" && c.Fix != "" {
						fixes = append(fixes, fmt.Sprintf("  %s: %s", c.Name, c.Fix))
					}
				}
				if len(fixes) > 0 {
					fmt.Fprintf(a.stdout, "\nFixes:\n%s\n", strings.Join(fixes, "\n"))
				}
				vmm := r.VMM.Name
				if r.VMM.Name == "qemu" && r.Accel != "" {
					vmm += " (" + r.Accel + ")"
				}
				fmt.Fprintf(a.stdout, "\nVMM:  %s\n      %s\nDisk: %s\n      %s\n", vmm, r.VMM.Why, r.Disk.Name, r.Disk.Why)
			}
			if r.Failed() {
				return exitError{code: 1}
			}
			return nil
		},
	}
}
