package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

func (a *app) setCommand() *cobra.Command {
	var p rpc.VMSetParams
	cmd := &cobra.Command{
		Use:   "set NAME [--cpus N] [--mem MiB] [--disk GiB]",
		Short: "Change a VM's vCPUs, memory or disk; applied at its next start (a disk only grows, with the VM stopped)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Ref = args[0]
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				var vm rpc.VM
				if err := c.Call(cmd.Context(), rpc.MethodVMSet, p, &vm); err != nil {
					return err
				}
				if a.jsonOutput() {
					return printJSON(a.stdout, vm)
				}
				when := ""
				if vm.State == "running" {
					when = " (from its next start)"
				}
				fmt.Fprintf(a.stdout, "VM %s: %d vCPUs, %d MiB, disk %s%s\n", vm.Name, vm.VCPUs, vm.MemoryMiB, humanBytes(vm.DiskBytes), when)
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&p.VCPUs, "cpus", 0, "vCPUs")
	cmd.Flags().IntVar(&p.MemoryMiB, "mem", 0, "memory in MiB")
	cmd.Flags().IntVar(&p.DiskGiB, "disk", 0, "disk size in GiB (grow only)")
	return cmd
}
