"""The demo that `make demo` prints still tells the story it claims."""

import contextlib
import io

from mesh import demo


def test_demo_delivers_everything_it_announces() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        demo.main()
    text = out.getvalue()
    for line in ("got b'hello n9' from n0 over 9 hops",
                 "got b'after the repair' from n0",
                 "gateway: b'status report' from n0 goes up the line",
                 "n0  gateway n3 -> n7",
                 "gateway: b'status report 2' from n0 goes up the line"):
        assert line in text, line
