package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"banger/internal/version"
)

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print banger's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := version.Get()
			if a.jsonOutput() {
				return printJSON(a.stdout, v)
			}
			commit := v.Commit
			if v.Modified {
				commit += " (modified)"
			}
			fmt.Fprintf(a.stdout, "banger %s\ncommit: %s\ngo: %s\n", v.Version, commit, v.GoVersion)
			return nil
		},
	}
}
