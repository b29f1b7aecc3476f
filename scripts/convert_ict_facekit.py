"""Convert the ICT-FaceKit face model (MIT licence) into the file the FaceSnap 3DMM Loader reads.

    python scripts/convert_ict_facekit.py --download ComfyUI/models/3dmm/ict_face_narrow.npz

or, from a local checkout:

    git clone --depth 1 https://github.com/ICT-VGL/ICT-FaceKit
    python scripts/convert_ict_facekit.py ICT-FaceKit/FaceXModel ComfyUI/models/3dmm/ict_face_narrow.npz

Reads the 158 OBJs (405 MB of text; --download fetches exactly those) with progress bars, keeps the narrow face
area, writes a ~4.7 MB npz and loads it back to verify it before giving it its final name. Run it with ComfyUI's
Python (numpy, torch and tqdm are needed).
"""

from __future__ import annotations

import argparse
import pathlib
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("facexmodel_dir", type=pathlib.Path, nargs="?",
                        help="the FaceXModel folder of an ICT-FaceKit checkout (leave out with --download)")
    parser.add_argument("output", type=pathlib.Path, help="where to write ict_face_narrow.npz (ComfyUI/models/3dmm/)")
    parser.add_argument("--download", action="store_true",
                        help="fetch the FaceXModel OBJs from GitHub (resumable) instead of reading a checkout")
    parser.add_argument("--base-url", help="where --download fetches the OBJs from (a mirror of FaceXModel/)")
    args = parser.parse_args(argv)
    if args.download == (args.facexmodel_dir is not None):
        parser.error("give either a FaceXModel folder or --download, not both")
    if args.base_url and not args.download:
        parser.error("--base-url only applies with --download")
    root = pathlib.Path(__file__).resolve().parents[1]
    sys.path.append(str(root))
    import pack_import

    sys.path.remove(str(root))
    pack_import.load_pack()
    from comfyui_facesnap.models.errors import FaceSnapError
    from comfyui_facesnap.models.face3d.ict_download import ICT_BASE_URL, download_ict_facekit
    from comfyui_facesnap.models.face3d.morphable_model import convert_ict_facekit, load_ict_npz

    try:
        if args.download:
            out = download_ict_facekit(args.output, args.base_url or ICT_BASE_URL)
        else:
            out = convert_ict_facekit(args.facexmodel_dir, args.output)
    except FaceSnapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    model = load_ict_npz(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {model.neutral.shape[0]} vertices, "
          f"{model.num_id} identity modes, {model.num_exp} fitted expressions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
