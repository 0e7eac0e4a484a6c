package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/daemon"
	"banger/internal/rpc"
)

func (a *app) doctorCommand() *cobra.Command {
	var fix, dryRun bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this host for what banger needs (no daemon needed)",
		Long: `Check this host for what banger needs: KVM, the VMMs, device-mapper,
loop devices, reflinks, TUN, bridges, nftables, IP forwarding, mkfs.ext4 and
free disk. Each check is ok, warn or fail with the fix; then the VMM and disk
strategy banger will use here, and why. Exits 1 when a check fails.

With --fix, asks the daemon for its ledger of host objects (TAPs, VMM
processes, VM directories, loop and device-mapper devices, its nftables
table), each with the owner its name records, and removes those no record
owns; --dry-run lists them and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if fix || dryRun {
				return a.doctorFix(cmd.Context(), dryRun)
			}
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
	cmd.Flags().BoolVar(&fix, "fix", false, "remove host objects no record owns (needs the daemon)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "with --fix: list what would be removed, change nothing")
	return cmd
}

// doctorFix runs daemon.reconcile and prints the ledger.
func (a *app) doctorFix(ctx context.Context, dryRun bool) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var res rpc.ReconcileResult
	if err := c.Call(ctx, rpc.MethodReconcile, rpc.ReconcileParams{DryRun: dryRun}, &res); err != nil {
		return err
	}
	if a.jsonOutput() {
		return printJSON(a.stdout, res)
	}
	t := newTable(a.stdout, "KIND", "NAME", "OWNER", "STATE")
	orphans, failed := 0, 0
	for _, o := range res.Objects {
		state := "owned"
		switch {
		case o.Error != "":
			state, failed = "orphan: removal failed: "+o.Error, failed+1
		case o.Removed:
			state = "orphan: removed (" + o.Why + ")"
		case o.Orphan:
			state = "orphan (" + o.Why + ")"
		}
		if o.Orphan {
			orphans++
		}
		t.row(o.Kind, o.Name, o.Owner, state)
	}
	t.flush()
	switch {
	case orphans == 0:
		fmt.Fprintln(a.stdout, "\nNo orphans: every host object banger made has its record.")
	case dryRun:
		fmt.Fprintf(a.stdout, "\n%d orphan(s); --dry-run changed nothing.\n", orphans)
	default:
		fmt.Fprintf(a.stdout, "\n%d orphan(s), %d removed.\n", orphans, orphans-failed)
	}
	if failed > 0 {
		return exitError{code: 1}
	}
	return nil
}
