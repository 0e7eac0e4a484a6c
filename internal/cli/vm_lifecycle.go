package cli

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

func (a *app) startCommand() *cobra.Command {
	var cancelOnInterrupt bool
	cmd := &cobra.Command{
		Use:   "start NAME",
		Short: "Start a stopped VM (its disk kept); returns when its SSH answers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.vmOp(cmd.Context(), rpc.MethodVMStart, rpc.NameRef{Ref: args[0]}, cancelOnInterrupt)
		},
	}
	cmd.Flags().BoolVar(&cancelOnInterrupt, "cancel-on-interrupt", false, "cancel the start on Ctrl-C")
	return cmd
}

func (a *app) restartCommand() *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Stop a running VM, then start it again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.vmOp(cmd.Context(), rpc.MethodVMRestart, rpc.VMStopParams{Ref: args[0], TimeoutSeconds: timeout}, false)
		},
	}
	cmd.Flags().IntVar(&timeout, "timeout", 10, "seconds the guest gets to power off before it is killed")
	return cmd
}

// vmOp starts an async VM operation and follows it to the end.
func (a *app) vmOp(ctx context.Context, method string, params any, cancelOnInterrupt bool) error {
	return a.withClient(ctx, func(c *rpc.Client) error {
		var started rpc.VMStarted
		if err := c.Call(ctx, method, params, &started); err != nil {
			return err
		}
		final, err := a.followOp(ctx, c, started.OpID, cancelOnInterrupt, "banger op watch "+started.OpID)
		if err != nil || a.jsonOutput() {
			return err
		}
		var vm rpc.VM
		if err := json.Unmarshal(final.Result, &vm); err != nil {
			return fmt.Errorf("decode the operation's result: %w", err)
		}
		fmt.Fprintf(a.stdout, "VM %s running: %s, %s\n", vm.Name, vm.IP, vm.DNSName)
		return nil
	})
}

func (a *app) stopCommand() *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   "stop NAME...",
		Short: "Stop VMs: the guest is asked to power off, and killed after --timeout",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				for _, ref := range args {
					var vm rpc.VM
					if err := c.Call(cmd.Context(), rpc.MethodVMStop, rpc.VMStopParams{Ref: ref, TimeoutSeconds: timeout}, &vm); err != nil {
						return err
					}
					if a.jsonOutput() {
						printJSON(a.stdout, vm)
						continue
					}
					fmt.Fprintf(a.stdout, "Stopped VM %s\n", vm.Name)
				}
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&timeout, "timeout", 10, "seconds the guest gets to power off before it is killed")
	return cmd
}

func (a *app) logsCommand() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's serial console (-f follows it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				err := c.Stream(cmd.Context(), rpc.MethodVMLogs, rpc.VMLogsParams{Ref: args[0], Follow: follow}, func(ev rpc.StreamEvent) error {
					var b []byte
					if err := json.Unmarshal(ev.Data, &b); err != nil {
						return err
					}
					_, err := a.stdout.Write(b)
					return err
				}, nil)
				if follow && cmd.Context().Err() != nil {
					return nil // Ctrl-C ends following
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what the console writes")
	return cmd
}
