//! `vggtiny predict`: the five most likely classes of each image, with their probabilities.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use tch::Kind;

use crate::bail_input;
use crate::checkpoint::{read_tensors, Source};
use crate::cli::PredictArgs;
use crate::config::{describe, resolve_device};
use crate::data::augment::normalize_channels_last;
use crate::data::cache::decode_files;
use crate::data::scan::{find_classes, DataRoot};
use crate::eval::log_probs;
use crate::model::{Part, Vgg16};

#[derive(Serialize)]
struct Guess {
    wnid: String,
    name: String,
    prob: f64,
}

#[derive(Serialize)]
struct Prediction {
    image: PathBuf,
    top5: Vec<Guess>,
}

pub fn run(args: &PredictArgs) -> Result<()> {
    let device = resolve_device(&args.device)?;
    eprintln!("device: {}", describe(device));
    let source = Source::resolve(&args.checkpoint, args.which)?;
    let checkpoint = source.model.display().to_string();
    let (classes, names) = match (&source.meta, &args.data) {
        (Some(meta), _) => (meta.classes.clone(), meta.class_names.clone()),
        (None, Some(data)) => {
            let root = DataRoot::locate(data)?;
            let classes = find_classes(&root.train)?;
            let names = root.class_names(&classes)?;
            (classes, names)
        }
        (None, None) => bail_input!(
            "{checkpoint} has no meta.json beside it: pass --data DIR so that its classes are known"
        ),
    };
    let mut model = Vgg16::new(classes.len() as i64, device);
    model.load(read_tensors(&source.model)?, Part::All, &checkpoint)?;

    let images = decode_files(&args.images)?.to_device(device);
    let x = images
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        .g_mul_scalar_(1.0 / 255.0);
    let probs = log_probs(&model, &normalize_channels_last(&x), args.tta).exp();
    let k = 5.min(classes.len() as i64);
    let (top_p, top_i) = probs.topk(k, 1, true, true);
    let top_p = Vec::<f64>::try_from(&top_p.to_kind(Kind::Double).flatten(0, -1))?;
    let top_i = Vec::<i64>::try_from(&top_i.flatten(0, -1))?;

    let predictions: Vec<Prediction> = args
        .images
        .iter()
        .enumerate()
        .map(|(n, path)| Prediction {
            image: path.clone(),
            top5: (0..k as usize)
                .map(|j| {
                    let at = n * k as usize + j;
                    let class = top_i[at] as usize;
                    Guess {
                        wnid: classes[class].clone(),
                        name: names.get(class).cloned().unwrap_or_default(),
                        prob: top_p[at],
                    }
                })
                .collect(),
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string(&predictions)?);
    } else {
        for p in &predictions {
            println!("{}", p.image.display());
            for (rank, g) in p.top5.iter().enumerate() {
                println!("  {}. {:.4}  {}  {}", rank + 1, g.prob, g.wnid, g.name);
            }
        }
    }
    Ok(())
}
