"""The edge contract: what every backend takes and gives (`spec`), input sizes, errors and exit
codes, optional libraries and install hints, atomic writes, file sniffing, text helpers.

numpy only, never torch: everything the edge install runs stands on this package.
"""
