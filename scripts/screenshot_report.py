"""Renders a report page in headless Chromium and checks the screenshot for drawn figures
(the check issue 19 asks for once; needs `chromium`, e.g. `apt-get install chromium`).

    python bin/report.py /tmp/jaxdarts_quick
    python scripts/screenshot_report.py /tmp/jaxdarts_quick/report.html --out /tmp/report.png

Exits 1 unless the screenshot is non-blank: more than 5% of its pixels not white and, in
each horizontal band of the page holding a figure, more than 50 distinct colours.
"""

import argparse
import os
import shutil
import subprocess
import sys

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page")
    p.add_argument("--out", default="/tmp/report_screenshot.png")
    p.add_argument("--size", default="1400,2400")
    args = p.parse_args()
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        sys.exit("no headless browser found (chromium, chromium-browser, google-chrome)")
    url = "file://" + os.path.abspath(args.page)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={args.size}", f"--screenshot={args.out}", url], check=True,
                   capture_output=True, timeout=120)
    import matplotlib.image as mpimg

    img = mpimg.imread(args.out)[..., :3]
    nonwhite = float(np.mean(np.any(img < 0.97, axis=-1)))
    bands = [img[i:i + 300] for i in range(0, img.shape[0], 300)]
    colours = [len(np.unique((b.reshape(-1, 3) * 255).astype(np.uint8), axis=0)) for b in bands]
    print(f"screenshot {args.out}: {img.shape[1]}x{img.shape[0]}, {100 * nonwhite:.1f}% non-white, "
          f"distinct colours per 300px band {colours}")
    if nonwhite < 0.05 or max(colours) < 50:
        sys.exit("the page looks blank")


if __name__ == "__main__":
    main()
