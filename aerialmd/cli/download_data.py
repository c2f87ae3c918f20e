"""Download AerialMegaDepth data from Google Drive links or the Hugging Face dataset, and unpack it.

Examples:
  python download_data.py --output_path data --gdrive_link "https://drive.google.com/open?id=<id>" --unzip --remove_zip
  python download_data.py --output_path data --gdrive_links_file links.txt --unzip --create_subdirs
  python download_data.py --output_path data --allow_patterns "*.zip" --unzip
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aerialmd.stages.download import (
    DEFAULT_HF_REPO_ID,
    DownloadError,
    Options,
    download_hf,
    download_links,
    format_summary,
    read_links_file,
)

EPILOG = """\
source:
  --source defaults to 'gdrive' when --gdrive_link or --gdrive_links_file is given, to 'hf' otherwise.
  gdrive: each link is fetched with gdown into --output_path (Drive links of the forms open?id=<id>,
          /file/d/<id>/view and uc?id=<id>, or any http(s) URL).
  hf:     the dataset --hf_repo_id is fetched with huggingface_hub into --output_path, keeping the
          repository layout; --allow_patterns limits which files.

behaviour:
  Interrupted downloads resume; a file already complete is not fetched again. With --unzip, each
  archive (.zip, .tar, .tar.gz, .tgz) is verified, checked for members escaping the output folder and
  for free disk space, then extracted next to itself through a temporary folder: existing folders are
  merged, same-named files replaced, nothing is touched when the archive fails. A failed link does not
  stop the others; a summary ends the run.

exit status: 0 all succeeded, 1 some link, dataset or archive failed, 2 bad arguments.
"""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options; the original project's flags keep their names."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--output_path", required=True, type=Path, help="folder receiving downloads and extracted data")
    parser.add_argument("--source", choices=("gdrive", "hf"), help="where to download from (see below)")
    links = parser.add_mutually_exclusive_group()
    links.add_argument("--gdrive_link", help="one Google Drive file link (or plain http(s) URL)")
    links.add_argument(
        "--gdrive_links_file",
        type=Path,
        help="text file with one link per line ('#' comments and 'name: link' lines allowed)",
    )
    parser.add_argument(
        "--hf_repo_id", default=DEFAULT_HF_REPO_ID, help="Hugging Face dataset repository (default: %(default)s)"
    )
    parser.add_argument(
        "--allow_patterns", nargs="+", metavar="GLOB", help="only fetch dataset files matching these globs (hf source)"
    )
    parser.add_argument("--unzip", action="store_true", help="verify and extract each downloaded archive")
    parser.add_argument(
        "--remove_zip", action="store_true", help="delete each archive after a successful extraction (implies --unzip)"
    )
    parser.add_argument(
        "--create_subdirs", action="store_true", help="extract each archive into a subfolder named after it"
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="extra attempts after a network failure, per link (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the download; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    has_links = args.gdrive_link is not None or args.gdrive_links_file is not None
    source = args.source or ("gdrive" if has_links else "hf")
    if source == "gdrive" and not has_links:
        parser.error("--source gdrive needs --gdrive_link or --gdrive_links_file")
    if source == "hf" and has_links:
        parser.error("--gdrive_link/--gdrive_links_file cannot be used with --source hf")
    if source == "gdrive" and args.allow_patterns:
        parser.error("--allow_patterns applies to the Hugging Face source only")
    if args.retries < 0:
        parser.error("--retries must be 0 or more")
    options = Options(
        unzip=args.unzip or args.remove_zip,
        remove_zip=args.remove_zip,
        create_subdirs=args.create_subdirs,
        retries=args.retries,
    )
    if source == "hf":
        results = download_hf(args.hf_repo_id, args.output_path, allow_patterns=args.allow_patterns, options=options)
    else:
        try:
            links = [args.gdrive_link] if args.gdrive_link else read_links_file(args.gdrive_links_file)
        except DownloadError as exc:
            parser.error(str(exc))
        results = download_links(links, args.output_path, options)
    print(format_summary(results))
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
