//! Writes a calibration set from FER2013's PublicTest rows seen through a consistent shift in
//! appearance (tests/common/shift.rs): the first `per_class` faces of each expression, in a
//! CSV that `fer calibrate --csv` reads. For measuring calibration on real faces:
//!
//!     cargo run --release --example shifted_person -- ../shared/fer2013/fer2013-train-publictest.csv.gz /tmp/person.csv 32

#[path = "../tests/common/mod.rs"]
mod common;

use common::{shift::shifted_face, Lcg};
use fer_cnn::data::{read_fer2013_path, Usage, NUM_CLASSES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output, rest @ ..] = args.as_slice() else {
        return Err("usage: shifted_person FER2013.csv[.gz] OUT.csv [PER_CLASS=32]".into());
    };
    let per_class: usize = rest.first().map_or(Ok(32), |n| n.parse())?;
    let data = read_fer2013_path(input.as_ref(), |_| {})?.dataset;
    let mut rng = Lcg(7);
    let mut csv = String::from("emotion,pixels,Usage\n");
    for class in 0..NUM_CLASSES as u8 {
        let rows = data.indices_of(Usage::PublicTest).into_iter().filter(|&r| data.label(r) == class).take(per_class);
        for row in rows {
            let pixels: Vec<String> = shifted_face(data.face(row), &mut rng).iter().map(|p| p.to_string()).collect();
            csv += &format!("{class},{},Training\n", pixels.join(" "));
        }
    }
    std::fs::write(output, csv)?;
    Ok(())
}
