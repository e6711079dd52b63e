package mysql

import (
	"reflect"
	"testing"

	"github.com/rahatback/rahatback/pipeline"
)

// sample has the traps of a mariadb-dump stream: tuples on one line and
// on lines of their own, strings holding parentheses, semicolons, escaped
// quotes and backslashes, a name with a doubled backquote, an INSERT in a
// routine body, INSERTs with a column list (a table with invisible
// columns, one of them named with a parenthesis), and an empty table.
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
	"--\n-- Dumping data for table `inv`\n--\n" +
	"INSERT INTO `inv` (`id`, `a)``b`, `hidden`) VALUES (1,'x)',NULL),\n(2,'y',3);\n" +
	"INSERT INTO `inv` (`id`) VALUES\n(3);\n" +
	"-- Dump completed on 2026-11-30 19:08:09\n"

// hashOf is the content hash of tuples.
func hashOf(tuples ...string) string {
	var h pipeline.RowHash
	for _, t := range tuples {
		h.Add([]byte(t))
	}
	return h.String()
}

func TestRowCounter(t *testing.T) {
	want := []pipeline.TableCount{
		{Name: "a`b", Rows: 5, Hash: hashOf(`(5,')')`, `(1,'x (y); \') z')`, `(2,NULL)`, `(3,'\\')`, `(4,'(')`)},
		{Name: "empty", Rows: 0, Hash: hashOf()},
		{Name: "ü t", Rows: 1, Hash: hashOf(`(1,0x28292C3B)`)},
		{Name: "inv", Rows: 3, Hash: hashOf(`(1,'x)',NULL)`, `(2,'y',3)`, `(3)`)}}
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

// objectSample is a table's structure, a view and the CREATE lines of a
// trigger, a procedure, a function and an event, as mariadb-dump 10.11
// writes them.
const objectSample = "--\n-- Table structure for table `o``rders`\n--\n\n" +
	"DROP TABLE IF EXISTS `o``rders`;\n" +
	"CREATE TABLE `o``rders` (\n  `id` int(11) NOT NULL,\n  `KEY` int(11) DEFAULT NULL,\n" +
	"  PRIMARY KEY (`id`),\n  UNIQUE KEY `u k` (`KEY`),\n  KEY `k` (`KEY`,`id`),\n" +
	"  CONSTRAINT `fk` FOREIGN KEY (`KEY`) REFERENCES `x` (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n" +
	"--\n-- Temporary table structure for view `v`\n--\n" +
	"DELIMITER ;;\n" +
	"/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `t``g` BEFORE INSERT ON `o``rders` FOR EACH ROW SET NEW.id = 1 */;;\n" +
	"DELIMITER ;\n" +
	"DELIMITER ;;\n" +
	"/*!50106 CREATE*/ /*!50117 DEFINER=`root`@`localhost`*/ /*!50106 EVENT `ev` ON SCHEDULE EVERY 1 DAY DO DELETE FROM `x` */ ;;\n" +
	"DELIMITER ;\n" +
	"DELIMITER ;;\n" +
	"CREATE DEFINER=`PROCEDURE `` x`@`%` PROCEDURE `p r`(OUT n INT)\nBEGIN\nSELECT 1;\nEND ;;\n" +
	"DELIMITER ;\n" +
	"DELIMITER ;;\n" +
	"CREATE DEFINER=`root`@`localhost` FUNCTION `f`(x INT) RETURNS int(11)\n    DETERMINISTIC\nRETURN x * 2 ;;\n" +
	"DELIMITER ;\n" +
	"--\n-- Final view structure for view `v`\n--\n"

func TestRowCounterObjects(t *testing.T) {
	want := []pipeline.SchemaObject{{Type: "TABLE", Name: "o`rders"}, {Type: "INDEX", Name: "o`rders.PRIMARY"},
		{Type: "INDEX", Name: "o`rders.u k"}, {Type: "INDEX", Name: "o`rders.k"}, {Type: "CONSTRAINT", Name: "o`rders.fk"},
		{Type: "VIEW", Name: "v"}, {Type: "TRIGGER", Name: "t`g"}, {Type: "EVENT", Name: "ev"},
		{Type: "PROCEDURE", Name: "p r"}, {Type: "FUNCTION", Name: "f"}}
	for _, size := range []int{1, 5, len(objectSample)} {
		c := newRowCounter()
		for i := 0; i < len(objectSample); i += size {
			c.Write([]byte(objectSample[i:min(i+size, len(objectSample))]))
		}
		if got := c.Objects(); !reflect.DeepEqual(got, want) {
			t.Fatalf("in pieces of %d:\n got  %v\n want %v", size, got, want)
		}
	}
}

// dumpLike is about n bytes shaped like mariadb-dump's data: extended
// INSERTs of tuples with numbers, quoted strings with escapes, hex blobs
// and JSON, one tuple per line.
func dumpLike(n int) []byte {
	var b []byte
	for t := 0; len(b) < n; t++ {
		b = append(b, "--\n-- Dumping data for table `events`\n--\n\nINSERT INTO `events` VALUES\n"...)
		for i := 0; i < 2000; i++ {
			if i > 0 {
				b = append(b, ",\n"...)
			}
			b = append(b, "(1234567,98765,'purchase',1234.56,'2024-05-06 07:08:09.123456','n0te with \\'quote\\' and (parens); ok','{\"ip\": \"10.1.2.3\", \"session\": \"0123456789abcdef0123456789abcdef\", \"score\": 0.1234}',0x0123456789ABCDEF0123456789ABCDEF)"...)
		}
		b = append(b, ";\n"...)
	}
	return b
}

func BenchmarkRowCounter(b *testing.B) {
	data := dumpLike(64 << 20)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		c := newRowCounter()
		for i := 0; i < len(data); i += 32 << 10 {
			c.Write(data[i:min(i+32<<10, len(data))])
		}
	}
}
