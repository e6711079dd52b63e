package mysql

import (
	"reflect"
	"testing"

	"github.com/rahatback/rahatback/pipeline"
)

// sample has the traps of a mariadb-dump stream: tuples on one line and
// on lines of their own, strings holding parentheses, semicolons, escaped
// quotes and backslashes, a name with a doubled backquote, an INSERT in a
// routine body, an INSERT with a column list, and an empty table.
const sample = "-- MariaDB dump 10.19\n" +
	"--\n-- Dumping data for table `a``b`\n--\n\n" +
	"LOCK TABLES `a``b` WRITE;\n" +
	"INSERT INTO `a``b` VALUES\n(1,'x (y); \\') z'),\n(2,NULL),\n(3,'\\\\');\n" +
	"INSERT INTO `a``b` VALUES (4,'('),(5,')');\n" +
	"UNLOCK TABLES;\n" +
	"--\n-- Dumping data for table `empty`\n--\n\n" +
	"--\n-- Dumping data for table `ü t`\n--\n" +
	"INSERT INTO `ü t` VALUES (1,0x28292C3B);\n" +
	"DELIMITER ;;\n" +
	"CREATE PROCEDURE p() BEGIN\n" +
	"INSERT INTO `a``b` VALUES (9,'no');\n" +
	"END ;;\n" +
	"DELIMITER ;\n" +
	"INSERT INTO `ü t` (id) VALUES (7);\n" +
	"-- Dump completed on 2026-11-30 19:08:09\n"

func TestRowCounter(t *testing.T) {
	want := []pipeline.TableCount{{Name: "a`b", Rows: 5}, {Name: "empty", Rows: 0}, {Name: "ü t", Rows: 1}}
	for _, size := range []int{1, 2, 3, 7, 64, len(sample)} {
		c := newRowCounter()
		for i := 0; i < len(sample); i += size {
			if _, err := c.Write([]byte(sample[i:min(i+size, len(sample))])); err != nil {
				t.Fatal(err)
			}
		}
		if got := c.Tables(); !reflect.DeepEqual(got, want) {
			t.Fatalf("in pieces of %d: %+v, want %+v", size, got, want)
		}
	}
}
