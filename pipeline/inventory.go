package pipeline

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// SchemaObject is one schema object a dump defines. Type is the engine's
// own word for it ("TABLE", "VIEW", "FUNCTION", "INDEX", "TRIGGER",
// "collection"…); Schema is "" where the engine has none.
type SchemaObject struct {
	Type   string `json:"type"`
	Schema string `json:"schema,omitempty"`
	Name   string `json:"name"`
}

func (o SchemaObject) String() string {
	if o.Schema == "" {
		return strings.ToLower(o.Type) + " " + o.Name
	}
	return strings.ToLower(o.Type) + " " + o.Schema + "." + o.Name
}

// RowHash is a table's content hash that does not depend on row order:
// the sum modulo 2^64 of the 64-bit xxHash of every row as the dump spells
// it, with the row count. Two dumps by the same tool of the same rows have
// the same hash, whatever order the server returned them in. The zero
// value is the hash of no rows.
type RowHash struct {
	sum uint64
	d   *xxhash.Digest
}

// Add adds one whole row.
func (h *RowHash) Add(row []byte) { h.sum += xxhash.Sum64(row) }

// Part adds a piece of the row being read; End ends that row.
func (h *RowHash) Part(p []byte) {
	if h.d == nil {
		h.d = xxhash.New()
	}
	_, _ = h.d.Write(p)
}

// End ends the row whose pieces Part added (an empty row without any).
func (h *RowHash) End() {
	if h.d == nil {
		h.sum += xxhash.Sum64(nil)
		return
	}
	h.sum += h.d.Sum64()
	h.d.Reset()
}

// Discard forgets the pieces of the row being read.
func (h *RowHash) Discard() {
	if h.d != nil {
		h.d.Reset()
	}
}

// String is the hash as manifests record it: "xxh64sum:" and 16 hex digits.
func (h *RowHash) String() string { return fmt.Sprintf("xxh64sum:%016x", h.sum) }

// InventoryDiff lists how what a dump (or a restored copy) holds differs
// from what a manifest recorded, one sentence per difference, at most max
// (then a count of the rest). Tables compare by schema and name: rows, and
// hashes when both have one; objects compare as sets.
type InventoryDiff struct {
	Tables  []string // tables missing, extra, or with other rows
	Hashes  []string // tables whose rows have the same count but other content
	Objects []string // schema objects missing or extra
}

// CompareTables compares recorded (a manifest's) with found (a dump's).
// what names where found comes from ("in the dump", "restored").
func CompareTables(recorded, found []TableCount, what string) (rows, hashes []string) {
	key := func(t TableCount) string { return tableName(t) }
	idx := map[string]TableCount{}
	for _, t := range found {
		idx[key(t)] = t
	}
	seen := map[string]bool{}
	for _, r := range recorded {
		k := key(r)
		seen[k] = true
		f, ok := idx[k]
		switch {
		case !ok && r.Rows == 0:
			// A table without rows may have no data block at all.
		case !ok:
			rows = append(rows, fmt.Sprintf("table %s: %d rows in the manifest, none %s", k, r.Rows, what))
		case f.Rows != r.Rows:
			rows = append(rows, fmt.Sprintf("table %s: %d rows in the manifest, %d %s", k, r.Rows, f.Rows, what))
		case r.Hash != "" && f.Hash != "" && r.Hash != f.Hash:
			hashes = append(hashes, fmt.Sprintf("table %s: same %d rows but other content (%s in the manifest, %s %s)", k, r.Rows, r.Hash, f.Hash, what))
		}
	}
	for _, f := range found {
		if k := key(f); !seen[k] && f.Rows > 0 {
			rows = append(rows, fmt.Sprintf("table %s: not in the manifest, %d rows %s", k, f.Rows, what))
		}
	}
	return rows, hashes
}

// CompareObjects compares recorded schema objects with found ones, as
// sets: "index public.x: in the manifest, missing <what>".
func CompareObjects(recorded, found []SchemaObject, what string) []string {
	have := map[SchemaObject]bool{}
	for _, o := range found {
		have[o] = true
	}
	want := map[SchemaObject]bool{}
	var out []string
	for _, o := range recorded {
		want[o] = true
		if !have[o] {
			out = append(out, fmt.Sprintf("%s: in the manifest, missing %s", o, what))
		}
	}
	for _, o := range found {
		if !want[o] {
			out = append(out, fmt.Sprintf("%s: not in the manifest, present %s", o, what))
			want[o] = true
		}
	}
	return out
}

// Summarize joins at most max differences with "; ", then says how many
// more there are.
func Summarize(diffs []string, max int) string {
	if len(diffs) <= max {
		return strings.Join(diffs, "; ")
	}
	return strings.Join(diffs[:max], "; ") + fmt.Sprintf("; and %d more", len(diffs)-max)
}

// CountObjects is a sentence counting objects by type: "3 tables, 2 views".
func CountObjects(objs []SchemaObject) string {
	n := map[string]int{}
	var types []string
	for _, o := range objs {
		t := strings.ToLower(o.Type)
		if n[t] == 0 {
			types = append(types, t)
		}
		n[t]++
	}
	slices.Sort(types)
	parts := make([]string, len(types))
	for i, t := range types {
		parts[i] = fmt.Sprintf("%d %s", n[t], t)
	}
	if len(parts) == 0 {
		return "no schema objects"
	}
	return strings.Join(parts, ", ")
}

func tableName(t TableCount) string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}
