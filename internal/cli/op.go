package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

func (a *app) opCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "op",
		Aliases: []string{"ops"},
		Short:   "Inspect the daemon's async operations (image pulls, VM creates)",
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "ls",
			Short: "List recent operations",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd.Context())
				if err != nil {
					return err
				}
				defer c.Close()
				ops, err := c.ListOps(cmd.Context())
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return printJSON(a.stdout, ops)
				}
				t := newTable(a.stdout, "ID", "KIND", "TARGET", "STATE", "PHASE", "STARTED")
				now := time.Now()
				for _, op := range ops {
					t.row(op.ID, op.Kind, op.Target, op.State, dash(op.Progress.Phase), ago(op.StartedAt, now))
				}
				return t.flush()
			},
		},
		&cobra.Command{
			Use:   "show ID",
			Short: "Show one operation",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd.Context())
				if err != nil {
					return err
				}
				defer c.Close()
				op, err := c.GetOp(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return printJSON(a.stdout, op)
				}
				a.printOp(op)
				return nil
			},
		},
		&cobra.Command{
			Use:   "watch ID",
			Short: "Follow an operation's progress until it ends (Ctrl-C stops watching, not the operation)",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd.Context())
				if err != nil {
					return err
				}
				defer c.Close()
				final, err := c.WatchOp(cmd.Context(), args[0], func(op rpc.Op) {
					if a.jsonOutput() {
						printJSONLine(a.stdout, op)
						return
					}
					fmt.Fprintln(a.stdout, progressLine(op))
				})
				if err != nil {
					return err
				}
				if final.State != "succeeded" {
					return fmt.Errorf("operation %s %s: %s", final.ID, final.State, final.Error)
				}
				return nil
			},
		},
		&cobra.Command{
			Use:   "cancel ID",
			Short: "Cancel a running operation",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := a.client(cmd.Context())
				if err != nil {
					return err
				}
				defer c.Close()
				return c.CancelOp(cmd.Context(), args[0])
			},
		},
	)
	return cmd
}

func (a *app) printOp(op rpc.Op) {
	fmt.Fprintf(a.stdout, "ID:       %s\nKind:     %s\nTarget:   %s\nState:    %s\n", op.ID, op.Kind, op.Target, op.State)
	fmt.Fprintf(a.stdout, "Progress: %s\n", progressLine(op))
	fmt.Fprintf(a.stdout, "Started:  %s\n", op.StartedAt.Local().Format(time.RFC3339))
	if !op.FinishedAt.IsZero() {
		fmt.Fprintf(a.stdout, "Finished: %s\n", op.FinishedAt.Local().Format(time.RFC3339))
	}
	if op.Error != "" {
		fmt.Fprintf(a.stdout, "Error:    %s\n", op.Error)
	}
}

// progressLine renders one line for non-terminal output.
func progressLine(op rpc.Op) string {
	p := op.Progress
	s := op.State
	if p.Phase != "" {
		s += " " + p.Phase
	}
	if p.Total > 0 {
		if p.Unit == "bytes" {
			s += fmt.Sprintf(" %s/%s (%d%%)", humanBytes(p.Done), humanBytes(p.Total), p.Done*100/p.Total)
		} else {
			s += fmt.Sprintf(" %d/%d", p.Done, p.Total)
		}
	}
	if p.Message != "" {
		s += ": " + p.Message
	}
	if op.Error != "" {
		s += ": " + op.Error
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
