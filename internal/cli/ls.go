package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) lsCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list", "ps"},
		Short:   "List VMs",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			defer c.Close()
			vms, err := c.ListVMs(cmd.Context())
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return printJSON(a.stdout, vms)
			}
			t := newTable(a.stdout, "NAME", "ID", "STATE", "IMAGE", "IP", "CPUS", "MEMORY", "CREATED")
			now := time.Now()
			for _, vm := range vms {
				ip := vm.IP
				if ip == "" {
					ip = "-"
				}
				id := vm.ID
				if len(id) > 12 {
					id = id[:12]
				}
				t.row(vm.Name, id, vm.State, vm.Image, ip, fmt.Sprint(vm.VCPUs), humanBytes(int64(vm.MemoryMiB)<<20), ago(vm.CreatedAt, now))
			}
			return t.flush()
		},
	}
}
