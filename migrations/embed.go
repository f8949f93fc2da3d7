// Package migrations embeds the SQL schema, one folder per dialect (sqlite, postgres).
// Both folders carry the same versions with the same meaning; goose applies them at start
// and on `provisioner migrate`.
package migrations

import "embed"

// FS holds sqlite/*.sql and postgres/*.sql.
//
//go:embed sqlite/*.sql postgres/*.sql
var FS embed.FS
