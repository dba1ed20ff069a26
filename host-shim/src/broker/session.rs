//! One client's session state. (Being implemented.)
