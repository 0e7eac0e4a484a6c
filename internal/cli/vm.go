package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

func (a *app) createCommand() *cobra.Command {
	var p rpc.VMCreateParams
	var noWait, cancelOnInterrupt bool
	cmd := &cobra.Command{
		Use:   "create --image IMAGE [--name NAME]",
		Short: "Create a VM from an image and boot it (returns when its SSH answers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			return a.withClient(ctx, func(c *rpc.Client) error {
				var started rpc.VMStarted
				if err := c.Call(ctx, rpc.MethodVMCreate, p, &started); err != nil {
					return err
				}
				if noWait {
					if a.jsonOutput() {
						return printJSON(a.stdout, started)
					}
					fmt.Fprintf(a.stdout, "Creating VM %s (operation %s)\n", started.VM.Name, started.OpID)
					return nil
				}
				final, err := a.followOp(ctx, c, started.OpID, cancelOnInterrupt, "banger op watch "+started.OpID)
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return nil
				}
				var vm rpc.VM
				if err := json.Unmarshal(final.Result, &vm); err != nil {
					return fmt.Errorf("decode the operation's result: %w", err)
				}
				fmt.Fprintf(a.stdout, "VM %s running: %s, %s\n", vm.Name, vm.IP, vm.DNSName)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Image, "image", "", "image to boot (required)")
	f.StringVar(&p.Name, "name", "", "VM name, also its host name (default: vm-<random>)")
	f.StringVar(&p.Kernel, "kernel", "", "kernel (default: the image's, else the default kernel)")
	f.IntVar(&p.VCPUs, "cpus", 0, "vCPUs (default: vm_vcpus from the config)")
	f.IntVar(&p.MemoryMiB, "mem", 0, "memory in MiB (default: vm_memory_mib from the config)")
	f.IntVar(&p.DiskGiB, "disk", 0, "disk size in GiB (default: the image's size)")
	f.BoolVar(&p.Entrypoint, "entrypoint", false, "start the image's own entrypoint at boot (output on the serial console)")
	f.BoolVar(&noWait, "no-wait", false, "return once the create has started")
	f.BoolVar(&cancelOnInterrupt, "cancel-on-interrupt", false, "cancel the create on Ctrl-C")
	cmd.MarkFlagRequired("image")
	return cmd
}

func (a *app) rmCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove VMs (a running one needs --force, which stops it first)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				for _, ref := range args {
					if err := c.Call(cmd.Context(), rpc.MethodVMRemove, rpc.VMRemoveParams{Ref: ref, Force: force}, nil); err != nil {
						return err
					}
					if !a.jsonOutput() {
						fmt.Fprintf(a.stdout, "Removed VM %s\n", ref)
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop a running VM first")
	return cmd
}

func (a *app) execCommand() *cobra.Command {
	var interactive bool
	var env []string
	var workdir, user string
	cmd := &cobra.Command{
		Use:   "exec NAME -- CMD [ARG...]",
		Short: "Run a command in a running VM; its exit status is banger's",
		Long: `Run a command in a running VM through the daemon (no route to the guest
needed). The command runs as given, without a shell: use
"banger exec vm -- sh -c '...'" for one. stdout and stderr are streamed;
-i also streams stdin. Ctrl-C is forwarded to the command as SIGINT.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := rpc.VMExecParams{VM: args[0], Argv: args[1:], Workdir: workdir, User: user, Env: map[string]string{}}
			for _, kv := range env {
				k, v, ok := cutEnv(kv)
				if !ok {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
				p.Env[k] = v
			}
			code, err := a.execInVM(p, interactive)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "stream stdin to the command")
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "set KEY=VALUE in the command's environment")
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory in the guest")
	cmd.Flags().StringVarP(&user, "user", "u", "", "user (name or uid[:gid]) in the guest")
	return cmd
}

func cutEnv(kv string) (string, string, bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], i > 0
		}
	}
	return "", "", false
}

// execInVM runs p and returns the command's exit status. It uses its own
// context: Ctrl-C is forwarded to the command, not used to abandon it.
func (a *app) execInVM(p rpc.VMExecParams, interactive bool) (int, error) {
	ctx := context.Background()
	c, err := a.client(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return a.execCall(ctx, c, p, interactive)
}

// execCall runs p (no terminal) over c and returns the command's exit
// status. SIGINT, SIGTERM and SIGHUP are forwarded to the command; stdin is
// streamed when interactive. When ctx ends, the call is abandoned and the
// daemon kills the command.
func (a *app) execCall(ctx context.Context, c *rpc.Client, p rpc.VMExecParams, interactive bool) (int, error) {
	call, err := c.Start(ctx, rpc.MethodVMExec, p, true)
	if err != nil {
		return 0, err
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigs:
				name := map[os.Signal]string{syscall.SIGINT: "INT", syscall.SIGTERM: "TERM", syscall.SIGHUP: "HUP"}[s]
				call.Send(rpc.InputSignal, name)
			case <-done:
				return
			}
		}
	}()
	if interactive {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := os.Stdin.Read(buf)
				if n > 0 {
					if call.Send(rpc.InputStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					call.Send(rpc.InputEOF, nil)
					return
				}
			}
		}()
	} else {
		call.Send(rpc.InputEOF, nil)
	}
	var res rpc.VMExecResult
	if err := call.Wait(ctx, execOutput(a.stdout, a.stderr), &res); err != nil {
		return 0, err
	}
	return res.ExitCode, nil
}

// execOutput writes a vm.exec call's stdout and stderr events to stdout
// and stderr.
func execOutput(stdout, stderr io.Writer) func(rpc.StreamEvent) error {
	return func(ev rpc.StreamEvent) error {
		var w io.Writer
		switch ev.Kind {
		case rpc.EventStdout:
			w = stdout
		case rpc.EventStderr:
			w = stderr
		default:
			return nil
		}
		var b []byte
		if err := json.Unmarshal(ev.Data, &b); err != nil {
			return err
		}
		_, err := w.Write(b)
		return err
	}
}

// vmShowCommand shows one VM.
func (a *app) vmShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show one VM",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withClient(cmd.Context(), func(c *rpc.Client) error {
				var vm rpc.VM
				if err := c.Call(cmd.Context(), rpc.MethodVMShow, rpc.NameRef{Ref: args[0]}, &vm); err != nil {
					return err
				}
				if a.jsonOutput() {
					return printJSON(a.stdout, vm)
				}
				up := "-"
				if vm.State == "running" && !vm.StartedAt.IsZero() {
					up = time.Since(vm.StartedAt).Round(time.Second).String()
				}
				fmt.Fprintf(a.stdout, "Name:     %s\nID:       %s\nState:    %s %s\nImage:    %s\nKernel:   %s\nIP:       %s\nDNS:      %s\nVMM:      %s\nDisk:     %s (%s)\nCPUs:     %d\nMemory:   %d MiB\nUptime:   %s\n",
					vm.Name, vm.ID, vm.State, vm.StateReason, vm.Image, dash(vm.Kernel), dash(vm.IP), vm.DNSName, dash(vm.VMM),
					humanBytes(vm.DiskBytes), dash(vm.Disk), vm.VCPUs, vm.MemoryMiB, up)
				return nil
			})
		},
	}
}
