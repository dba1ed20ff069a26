//! Topic names and topic filters. (Being implemented.)
