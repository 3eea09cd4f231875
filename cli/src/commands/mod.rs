//! One module per group of `berth` subcommands: each turns flags into
//! library calls and prints the result.

pub mod client;
pub mod container;
pub mod image;
pub mod kube;
pub mod kube_print;
pub mod progress;
pub mod run;

/// Left-aligned columns three spaces apart, as docker prints its tables
/// (`ps`, `images`); the first row is the header.
pub fn table<Row: AsRef<[String]>>(rows: &[Row]) -> String {
    let columns = rows.iter().map(|row| row.as_ref().len()).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.as_ref().iter().enumerate() {
            line.push_str(cell);
            if column + 1 < columns {
                let pad = widths[column] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let rows = [
            ["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            ["aaaa".to_owned(), "b".to_owned(), String::new()],
        ];
        assert_eq!(super::table(&rows), "A      BB   C\naaaa   b\n");
        let rows = vec![
            vec!["é".to_owned(), "x".to_owned()],
            vec!["ab".to_owned(), "y".to_owned()],
        ];
        assert_eq!(super::table(&rows), "é    x\nab   y\n");
    }
}
