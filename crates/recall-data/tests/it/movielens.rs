use recall_core::{RawIds, Table, testing::movielens_dir};
use recall_data::generic::GenericSource;
use recall_data::{IngestConfig, ingest};

fn ints(ids: &RawIds) -> &[i64] {
    match ids {
        RawIds::Int(v) => v,
        RawIds::Str(_) => panic!("expected integer ids"),
    }
}

#[test]
fn shared_ml_1m_parquet_loads_through_the_generic_path_with_dat_side_tables() {
    let Some(dir) = movielens_dir("ml-1m") else {
        return;
    };
    let d = ingest(&IngestConfig::Generic(GenericSource::ml_1m_parquet_layout(
        &dir,
    )))
    .unwrap();
    assert_eq!(d.stats.interactions, 1_000_209);
    assert_eq!(d.stats.users, 6_040);
    assert_eq!(d.stats.items, 3_706);
    assert_eq!(d.stats.duplicates_dropped, 0);
    // User 1's history starts as the SOURCE.md sample shows.
    assert_eq!(&ints(&d.interactions.item_id)[..3], &[3186, 1270, 1721]);
    assert_eq!(d.interactions.timestamp[0], Some(978_300_019));
    let users = Table::from_batch("users.dat", d.users.clone().unwrap());
    assert_eq!(users.num_rows(), 6_040);
    assert_eq!(users.ints("age").unwrap()[0], 1);
    let items = Table::from_batch("movies.dat", d.items.clone().unwrap());
    assert_eq!(items.num_rows(), 3_883);
    assert_eq!(
        items
            .string_lists("genres")
            .unwrap()
            .row(0)
            .collect::<Vec<_>>(),
        vec!["Animation", "Children's", "Comedy"]
    );
    // movies.dat is latin-1: row 73 is "Misérables, Les (1995)".
    let titles = items.nullable_strings("title").unwrap();
    assert_eq!(titles.value(72), "Misérables, Les (1995)");
}

/// The official `::` reader, on the real first 487,650 lines of ratings.dat, orders each user's
/// ratings exactly as the shared interactions.parquet does (by timestamp, ties in file order).
#[test]
fn official_ml_1m_reader_matches_the_shared_chronological_order() {
    let Some(dir) = movielens_dir("ml-1m") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("ratings_users0001-2999.dat.gz", "ratings.dat.gz"),
        ("users.dat", "users.dat"),
        ("movies.dat", "movies.dat"),
    ] {
        std::os::unix::fs::symlink(dir.join(from), tmp.path().join(to)).unwrap();
    }
    let d = ingest(&IngestConfig::Movielens1m {
        dir: tmp.path().to_owned(),
    })
    .unwrap();
    assert_eq!(d.stats.interactions, 487_650);
    assert_eq!(d.stats.users, 2_999);
    assert_eq!(d.stats.items, 3_615);

    let shared = Table::read(&dir.join("interactions.parquet")).unwrap();
    let users = shared.ints("user_id").unwrap();
    let movies = shared.ints("movie_id").unwrap();
    let prefix = users.iter().take_while(|&&u| u <= 2999).count();
    assert_eq!(prefix, 487_650);
    assert_eq!(ints(&d.interactions.user_id), &users[..prefix]);
    assert_eq!(ints(&d.interactions.item_id), &movies[..prefix]);
}

#[test]
fn ml_100k_release_reads_with_latin1_titles_and_genre_flags() {
    let Some(dir) = movielens_dir("ml-100k") else {
        return;
    };
    let d = ingest(&IngestConfig::Movielens100k { dir }).unwrap();
    assert_eq!(d.stats.interactions, 100_000);
    assert_eq!(d.stats.users, 943);
    assert_eq!(d.stats.items, 1_682);
    let items = Table::from_batch("u.item", d.items.clone().unwrap());
    assert_eq!(items.num_rows(), 1_682);
    assert_eq!(
        items.nullable_strings("title").unwrap().value(542),
        "Misérables, Les (1995)"
    );
    assert_eq!(
        items
            .string_lists("genres")
            .unwrap()
            .row(0)
            .collect::<Vec<_>>(),
        vec!["Animation", "Children's", "Comedy"]
    );
    // The release day, Unix seconds at 00:00 UTC; item 267 ("unknown") has none.
    let released = items.nullable_ints("released").unwrap();
    assert_eq!(released[0], Some(788_918_400)); // 01-Jan-1995
    assert_eq!(released[1601], Some(890_352_000)); // 20-Mar-1998
    assert_eq!(released.iter().filter(|r| r.is_none()).count(), 1);
    assert_eq!(released[266], None);
    let users = Table::from_batch("u.user", d.users.clone().unwrap());
    assert_eq!(users.ints("age").unwrap()[0], 24);
}

#[test]
fn ml_latest_small_reads_quoted_csv_titles() {
    let Some(dir) = movielens_dir("ml-latest-small") else {
        return;
    };
    let d = ingest(&IngestConfig::MovielensLatest { dir }).unwrap();
    assert_eq!(d.stats.interactions, 100_836);
    assert_eq!(d.stats.users, 610);
    assert_eq!(d.stats.items, 9_724);
    let items = Table::from_batch("movies.csv", d.items.clone().unwrap());
    assert_eq!(items.num_rows(), 9_742);
    assert!(d.interactions.rating.iter().all(|r| r.is_some()));
}
