package testsupport

import (
	"fmt"
	mrand "math/rand/v2"
	"strings"
)

// SQLDump returns about n bytes shaped like pg_dump's COPY data: a few
// tables of rows with tabs, NULLs, escapes and timestamps.
func SQLDump(n int) []byte {
	r := mrand.New(mrand.NewPCG(5, 5))
	var b []byte
	for t := 0; len(b) < n; t++ {
		b = fmt.Appendf(b, "\n--\n-- Data for Name: t%d; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n", t)
		b = fmt.Appendf(b, "COPY public.t%d (id, name, email, created_at, amount, notes) FROM stdin;\n", t)
		for range 20000 {
			notes := `\N`
			if r.IntN(3) > 0 {
				notes = strings.Repeat("lorem ipsum ", r.IntN(6)) + `\nsecond line`
			}
			b = fmt.Appendf(b, "%d\tuser_%d\tuser%d@example.com\t2024-%02d-%02d %02d:%02d:%02d.%06d+00\t%d.%02d\t%s\n",
				r.IntN(1e9), r.IntN(1e6), r.IntN(1e6), 1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60),
				r.IntN(1e6), r.IntN(1e5), r.IntN(100), notes)
		}
		b = append(b, "\\.\n\n"...)
	}
	return b
}
